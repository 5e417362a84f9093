"""The citizen's side of a unit's message box: the form page and its script, served by the
node's govhost-messages at the unit's path (/hudong/ by default; nginx passes /page and
/form.js on).

The script asks for a challenge, finds the proof of work (as many zero bits of
sha256(challenge ":" nonce) as the challenge names: the county's `work_bits`, 18 by default;
the same rule as `messages.work`) and posts the form. It carries
its own SHA-256: browsers give `crypto.subtle` only to pages served over HTTPS, and a county
site may still be on plain HTTP; a synchronous loop is also about ten times faster than
awaiting the browser's digest per nonce. Nothing is loaded from anywhere else.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html import escape
from urllib.parse import urlencode

_STYLE = """<style>
body { font-family: sans-serif; max-width: 48em; margin: 1em auto; padding: 0 1em; }
article { border-top: 1px solid #ccc; padding: 0.5em 0; }
.meta { color: #555; font-size: 0.9em; }
.answer { background: #f4f7fb; padding: 0.5em; white-space: pre-wrap; }
.text { white-space: pre-wrap; }
</style>"""

PER_PAGE = 20


def _head(title: str, what: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)} · {what}</title>\n{_STYLE}\n</head>\n<body>\n")


def _day(stamp: str) -> str:
    """The county's date of a UTC time as the node wrote it (UTC+8)."""
    t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return t.astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m-%d")


def _article(a: dict) -> str:
    return (f"<article>\n<h2>{escape(a['subject'])}</h2>\n"
            f'<p class="meta">编号 {escape(a["number"])} · 留言 {_day(a["received"])} · '
            f"答复 {_day(a['answered_at'])}</p>\n"
            f'<div class="text">{escape(a["text"])}</div>\n'
            f'<h3>答复</h3>\n<div class="answer">{escape(a["answer"])}</div>\n</article>\n')


def listing(title: str, answered: list[dict], query: str, page_no: int) -> bytes:
    """The unit's answered messages (those it publishes), newest answer first, 20 a page,
    searched by `query` in subject, text and answer. Never a name or a contact."""
    found = [a for a in answered if not query or query in a["subject"] or
             query in a["text"] or query in a["answer"]]
    pages = max(1, (len(found) + PER_PAGE - 1) // PER_PAGE)
    page_no = min(max(1, page_no), pages)
    shown = found[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]
    q = escape(query, quote=True)
    parts = [_head(title, "留言答复"), f"<h1>{escape(title)} · 留言答复</h1>\n",
             '<p><a href="./">我要留言</a></p>\n',
             f'<form method="get" action="list"><input name="q" value="{q}" maxlength="50">'
             '<button type="submit">搜索</button></form>\n',
             f'<p class="meta">共 {len(found)} 条，第 {page_no}/{pages} 页</p>\n',
             *(_article(a) for a in shown)]
    if page_no > 1:
        parts.append(f'<a href="list?{escape(urlencode({"q": query, "page": page_no - 1}))}">'
                     "上一页</a>\n")
    if page_no < pages:
        parts.append(f'<a href="list?{escape(urlencode({"q": query, "page": page_no + 1}))}">'
                     "下一页</a>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts).encode()


def reply(title: str, answered: dict | None, waiting: bool) -> bytes:
    """What the citizen's reading link shows: the answer, or that the message waits for one
    (`waiting`: this node holds it), or that nothing answered is known by that link."""
    parts = [_head(title, "留言查询"), f"<h1>{escape(title)} · 留言查询</h1>\n"]
    if answered is not None:
        parts.append(_article(answered))
        if not answered["publish"]:
            parts.append('<p class="meta">本留言的答复不公开，仅凭此链接可见。</p>\n')
    elif waiting:
        parts.append("<p>您的留言已收到，正在办理，答复后可在此查看。</p>\n")
    else:
        parts.append("<p>没有找到已答复的留言。尚未答复的留言，答复后可凭此链接查看。</p>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts).encode()


def page(title: str) -> bytes:
    """The form page of the unit called `title` (its manifest's `title`)."""
    t = escape(title)
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} · 互动交流 · 我要留言</title>
<style>
body {{ font-family: sans-serif; max-width: 40em; margin: 1em auto; padding: 0 1em; }}
label {{ display: block; margin-top: 0.8em; }}
input, textarea {{ width: 100%; box-sizing: border-box; font-size: 1em; }}
textarea {{ min-height: 10em; }}
.problem {{ color: #b00; }}
#gh-result {{ margin-top: 1em; padding: 0.5em; border: 1px solid #ccc; }}
</style>
</head>
<body>
<h1>{t} · 我要留言</h1>
<p>您的留言由本单位办理并答复。联系方式仅用于办理，不会公开。
<a href="list">查看已答复的留言</a></p>
<form id="gh-form" method="post" action="message">
<label for="gh-subject">标题</label>
<input id="gh-subject" name="subject" required maxlength="100">
<span class="problem" data-for="subject"></span>
<label for="gh-text">留言内容</label>
<textarea id="gh-text" name="text" required maxlength="5000"></textarea>
<span class="problem" data-for="text"></span>
<label for="gh-name">姓名（可不填）</label>
<input id="gh-name" name="name" maxlength="50">
<span class="problem" data-for="name"></span>
<label for="gh-contact">联系电话或电子邮箱（不公开）</label>
<input id="gh-contact" name="contact" required maxlength="100">
<span class="problem" data-for="contact"></span>
<p><button type="submit">提交留言</button></p>
<span class="problem" data-for="challenge"></span>
</form>
<div id="gh-result" role="status" aria-live="polite" hidden></div>
<script src="form.js"></script>
</body>
</html>
""".encode()


SCRIPT = """(function () {
"use strict";
var K = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2];
var W = new Int32Array(64);

/* SHA-256 of an ASCII string (a challenge and a nonce are ASCII). */
function sha256(text) {
  var l = text.length, n = ((l + 9 + 63) >> 6) << 6, b = new Uint8Array(n), i;
  for (i = 0; i < l; i++) { b[i] = text.charCodeAt(i) & 255; }
  b[l] = 0x80;
  var bits = l * 8;
  b[n - 4] = bits >>> 24; b[n - 3] = (bits >>> 16) & 255; b[n - 2] = (bits >>> 8) & 255;
  b[n - 1] = bits & 255;
  var H = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
           0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  for (var o = 0; o < n; o += 64) {
    for (i = 0; i < 16; i++) {
      W[i] = (b[o + 4 * i] << 24) | (b[o + 4 * i + 1] << 16) | (b[o + 4 * i + 2] << 8) |
             b[o + 4 * i + 3];
    }
    for (i = 16; i < 64; i++) {
      var x = W[i - 15], y = W[i - 2];
      var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    var a = H[0], c1 = H[1], c2 = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (i = 0; i < 64; i++) {
      var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      var t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      var t2 = (S0 + ((a & c1) ^ (a & c2) ^ (c1 & c2))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c2; c2 = c1; c1 = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + c1) | 0; H[2] = (H[2] + c2) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }
  return H;
}

/* Leading zero bits of a digest given as eight 32-bit words. */
function zeroBits(H) {
  for (var i = 0, n = 0; i < 8; i++, n += 32) {
    var w = H[i] >>> 0;
    if (w !== 0) { return n + Math.clz32(w); }
  }
  return 256;
}

function solve(challenge) {
  var bits = Number(challenge.split(".")[4]);
  return new Promise(function (done) {
    var i = 0;
    (function step() {
      for (var end = i + 20000; i < end; i++) {
        if (zeroBits(sha256(challenge + ":" + i)) >= bits) { done(String(i)); return; }
      }
      setTimeout(step, 0);   /* the page stays responsive */
    })();
  });
}

var root = typeof document === "undefined" ? null : document;
if (typeof module !== "undefined") { module.exports = {sha256: sha256, zeroBits: zeroBits, solve: solve}; }
if (!root) { return; }
var form = root.getElementById("gh-form"), out = root.getElementById("gh-result");
function show(text) { out.hidden = false; out.textContent = text; }
form.addEventListener("submit", function (ev) {
  ev.preventDefault();
  var marks = form.querySelectorAll(".problem");
  for (var i = 0; i < marks.length; i++) { marks[i].textContent = ""; }
  var button = form.querySelector("button");
  button.disabled = true;
  show("正在提交，请稍候……");
  fetch("challenge", {cache: "no-store"}).then(function (r) { return r.json(); })
  .then(function (c) {
    return solve(c.challenge).then(function (nonce) {
      var body = new URLSearchParams(new FormData(form));
      body.set("challenge", c.challenge);
      body.set("nonce", nonce);
      return fetch("message", {method: "POST", body: body});
    });
  }).then(function (r) {
    return r.json().then(function (doc) { return {ok: r.ok, doc: doc}; });
  }).then(function (res) {
    button.disabled = false;
    if (res.ok) {
      form.reset();
      show("留言已收到，编号 " + res.doc.number + "。请保存此链接，凭它查看答复：" +
           location.href.split("?")[0].replace(/[^/]*$/, "") + "reply?t=" + res.doc.token +
           (res.doc.held ? "。留言中有需要单位审核的词语，答复是否公开由单位审核后决定。" : ""));
      return;
    }
    var problems = res.doc.problems || {};
    for (var k in problems) {
      var m = form.querySelector('.problem[data-for="' + k + '"]');
      if (m) { m.textContent = problems[k]; }
    }
    show(res.doc.error || "留言未提交，请按提示修改后重试。");
  }).catch(function () {
    button.disabled = false;
    show("网络错误，留言未提交，请稍后重试。");
  });
});
})();
""".encode()
