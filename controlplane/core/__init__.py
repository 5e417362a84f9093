"""The shared core every capability stands on; it reaches into none of them.

Pure: `manifest` (the schema), `names`, `placement`, `units` (every site and its names),
`accounts` (tenant users and credentials derived from the secret), `errors`, `yamlsafe`.
Shell: `inventory` (load and check the manifests), `county` (the loaded county passed down),
`state` (the SQLite store and locks), `secrets`, `certstore` (certificate files), `remote`
(SSH and ansible-runner), `paths` (the node layout, a contract with the playbooks).
"""
