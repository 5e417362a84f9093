-- A state database written by govhost c7c2551's State (schema version 3): probe rounds of two weeks (2026-W48, W49), four releases of jiaoyu (superseded, live, pending, rejected), two compliance weeks; written with TZ=UTC.
PRAGMA user_version = 3;
BEGIN TRANSACTION;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE backup_checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, tenant TEXT, ok INTEGER NOT NULL,
    at REAL NOT NULL, seconds REAL, detail TEXT NOT NULL);
CREATE TABLE backups (
    run TEXT NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL, node TEXT NOT NULL,
    snapshot TEXT, ok INTEGER NOT NULL, started_at REAL, finished_at REAL NOT NULL,
    seconds REAL, files INTEGER, bytes INTEGER, bytes_added INTEGER, error TEXT,
    PRIMARY KEY (run, tenant, kind));
CREATE TABLE cert_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, lineage TEXT NOT NULL,
    issuer TEXT NOT NULL, names INTEGER NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE certificates (
    lineage TEXT PRIMARY KEY, issuer TEXT NOT NULL, names TEXT NOT NULL, units TEXT NOT NULL,
    not_before REAL, not_after REAL, serial TEXT, fingerprint TEXT, ocsp INTEGER,
    issued_at REAL, last_attempt REAL, last_error TEXT, failures INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0, failed_names TEXT NOT NULL DEFAULT '[]',
    attempt_names TEXT NOT NULL DEFAULT '[]');
CREATE TABLE compliance (
    week TEXT NOT NULL, tenant TEXT NOT NULL, checked_at REAL NOT NULL, verdicts TEXT NOT NULL,
    PRIMARY KEY (week, tenant));
INSERT INTO "compliance" VALUES('2026-W48','jiaoyu',1795910400.0,'{"reachable": {"ok": true}}');
INSERT INTO "compliance" VALUES('2026-W49','jiaoyu',1796256000.0,'{"reachable": {"ok": false}}');
INSERT INTO "compliance" VALUES('2026-W49','chahe',1796256000.0,'{"reachable": {"ok": true}}');
CREATE TABLE console_sessions (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, since REAL NOT NULL, seen REAL NOT NULL,
    must_change INTEGER NOT NULL);
CREATE TABLE content_releases (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, status TEXT NOT NULL,
    published_at REAL NOT NULL, actor TEXT NOT NULL, files INTEGER NOT NULL,
    bytes INTEGER NOT NULL, nodes TEXT NOT NULL, changes TEXT NOT NULL, decided_by TEXT,
    decided_at REAL, PRIMARY KEY (tenant, release_id));
INSERT INTO "content_releases" VALUES('jiaoyu','20261201T080000-aaaaaa','superseded',1796025600.0,'li',3,300,'["n1"]','{}',NULL,NULL);
INSERT INTO "content_releases" VALUES('jiaoyu','20261202T080000-bbbbbb','live',1796112000.0,'li',3,300,'["n1"]','{}',NULL,NULL);
INSERT INTO "content_releases" VALUES('jiaoyu','20261203T080000-cccccc','pending',1796198400.0,'li',3,300,'["n1"]','{}',NULL,NULL);
INSERT INTO "content_releases" VALUES('jiaoyu','20261203T090000-dddddd','rejected',1796202000.0,'li',3,300,'["n1"]','{}',NULL,NULL);
CREATE TABLE devices (
    token TEXT PRIMARY KEY, name TEXT NOT NULL, made REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE drained (
    node TEXT PRIMARY KEY, since REAL NOT NULL, actor TEXT NOT NULL);
CREATE TABLE enrolments (
    token TEXT PRIMARY KEY, name TEXT NOT NULL, made_by TEXT NOT NULL, made_at REAL NOT NULL,
    expires REAL NOT NULL, used REAL);
CREATE TABLE launches (
    tenant TEXT PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, checks TEXT NOT NULL);
CREATE TABLE logins (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, address TEXT NOT NULL,
    at REAL NOT NULL, ok INTEGER NOT NULL, why TEXT NOT NULL);
CREATE TABLE message_answers (
        number TEXT PRIMARY KEY, unit TEXT NOT NULL, received TEXT NOT NULL,
        subject TEXT NOT NULL, text TEXT NOT NULL, token_hash TEXT NOT NULL,
        answer TEXT NOT NULL, publish INTEGER NOT NULL, answered_by TEXT NOT NULL,
        answered_at REAL NOT NULL);
CREATE TABLE message_drafts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, number TEXT NOT NULL, unit TEXT NOT NULL,
        answer TEXT NOT NULL, publish INTEGER NOT NULL, by TEXT NOT NULL, at REAL NOT NULL,
        status TEXT NOT NULL);
CREATE TABLE message_index (
        number TEXT PRIMARY KEY, unit TEXT NOT NULL, received TEXT NOT NULL,
        subject TEXT NOT NULL, seen_at REAL NOT NULL);
CREATE TABLE message_notices (
        number TEXT NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (number, kind));
CREATE TABLE message_routes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, number TEXT NOT NULL, from_unit TEXT NOT NULL,
        to_unit TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE node_state (
    node TEXT PRIMARY KEY, release_id TEXT NOT NULL, digests TEXT NOT NULL,
    applied_at REAL NOT NULL, run_id INTEGER);
CREATE TABLE page_days (
    tenant TEXT NOT NULL, day TEXT NOT NULL, path TEXT NOT NULL, views INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, path));
CREATE TABLE people (
    name TEXT PRIMARY KEY, display TEXT NOT NULL, unit TEXT, roles TEXT NOT NULL,
    email TEXT NOT NULL, password TEXT NOT NULL, totp TEXT, totp_step INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0, must_change INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL, password_at REAL NOT NULL,
    sessions_after REAL NOT NULL DEFAULT 0);
CREATE TABLE placements (
    tenant TEXT NOT NULL, position INTEGER NOT NULL, node TEXT NOT NULL,
    PRIMARY KEY (tenant, position));
CREATE TABLE probe_days (
    tenant TEXT NOT NULL, day TEXT NOT NULL, probes INTEGER NOT NULL, failures INTEGER NOT NULL,
    PRIMARY KEY (tenant, day));
INSERT INTO "probe_days" VALUES('jiaoyu','2026-11-29',5,1);
INSERT INTO "probe_days" VALUES('chahe','2026-11-29',5,0);
INSERT INTO "probe_days" VALUES('jiaoyu','2026-12-02',6,2);
INSERT INTO "probe_days" VALUES('chahe','2026-12-02',6,0);
INSERT INTO "probe_days" VALUES('jiaoyu','2026-11-30',1,0);
INSERT INTO "probe_days" VALUES('chahe','2026-11-30',1,0);
CREATE TABLE probe_failures (
    tenant TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL);
INSERT INTO "probe_failures" VALUES('jiaoyu',1795978800.0,'[{"error": "timeout", "node": "n3", "seconds": 15.0, "status": null}]');
INSERT INTO "probe_failures" VALUES('jiaoyu',1796171400.0,'[{"error": "timeout", "node": "n3", "seconds": 15.0, "status": null}]');
INSERT INTO "probe_failures" VALUES('jiaoyu',1796173200.0,'[{"error": "timeout", "node": "n3", "seconds": 15.0, "status": null}]');
CREATE TABLE probe_hours (
    tenant TEXT NOT NULL, hour REAL NOT NULL, probes INTEGER NOT NULL, failures INTEGER NOT NULL,
    PRIMARY KEY (tenant, hour));
INSERT INTO "probe_hours" VALUES('jiaoyu',1795978800.0,1,1);
INSERT INTO "probe_hours" VALUES('chahe',1795978800.0,1,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1796169600.0,2,1);
INSERT INTO "probe_hours" VALUES('chahe',1796169600.0,2,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1795982400.0,1,0);
INSERT INTO "probe_hours" VALUES('chahe',1795982400.0,1,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1795986000.0,1,0);
INSERT INTO "probe_hours" VALUES('chahe',1795986000.0,1,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1796173200.0,2,1);
INSERT INTO "probe_hours" VALUES('chahe',1796173200.0,2,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1795989600.0,1,0);
INSERT INTO "probe_hours" VALUES('chahe',1795989600.0,1,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1795993200.0,1,0);
INSERT INTO "probe_hours" VALUES('chahe',1795993200.0,1,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1796176800.0,2,0);
INSERT INTO "probe_hours" VALUES('chahe',1796176800.0,2,0);
INSERT INTO "probe_hours" VALUES('jiaoyu',1795996800.0,1,0);
INSERT INTO "probe_hours" VALUES('chahe',1795996800.0,1,0);
CREATE TABLE review_chains (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, levels TEXT NOT NULL,
    publisher TEXT NOT NULL, PRIMARY KEY (tenant, release_id));
CREATE TABLE review_steps (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, level INTEGER NOT NULL, kind TEXT NOT NULL,
    decision TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL, comment TEXT NOT NULL,
    PRIMARY KEY (tenant, release_id, level));
CREATE TABLE rollbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, target TEXT NOT NULL,
    proposed_by TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, result TEXT NOT NULL, pid INTEGER, actor TEXT, summary TEXT);
CREATE TABLE site_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, manifest TEXT NOT NULL,
    form TEXT NOT NULL, contact TEXT NOT NULL, source TEXT NOT NULL, token TEXT NOT NULL, created REAL NOT NULL,
    status TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', decided_by TEXT,
    decided_at REAL);
CREATE TABLE visit_days (
    tenant TEXT NOT NULL, day TEXT NOT NULL, page_views INTEGER NOT NULL,
    visitors INTEGER NOT NULL, collected_at REAL NOT NULL, PRIMARY KEY (tenant, day));
CREATE TABLE wording_files (
    digest TEXT NOT NULL, lists TEXT NOT NULL, findings TEXT NOT NULL,
    PRIMARY KEY (digest, lists));
CREATE TABLE wording_releases (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, lists TEXT NOT NULL, checked_at REAL NOT NULL,
    files INTEGER NOT NULL, findings TEXT NOT NULL, PRIMARY KEY (tenant, release_id));
CREATE INDEX backups_tenant ON backups (tenant, finished_at);
CREATE INDEX probe_failures_tenant ON probe_failures (tenant, at);
CREATE INDEX logins_name ON logins (name, at);
CREATE INDEX logins_address ON logins (address, at);
CREATE INDEX logins_at ON logins (at);
CREATE INDEX message_answers_unit ON message_answers (unit);
CREATE INDEX message_index_unit ON message_index (unit);
CREATE INDEX message_routes_number ON message_routes (number);
CREATE INDEX message_drafts_number ON message_drafts (number);
DELETE FROM "sqlite_sequence";
COMMIT;
