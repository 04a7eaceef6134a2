"""More exams than one process: workers on one machine, nodes through a directory.

Design note (placing whole exams; see README "Deploying"):

- An exam is never split. One exam of 40 students and 5 surveillants costs about 14% of a
  core (measured), so the unit placed is the exam: on the least-loaded worker process
  (`invigil serve --workers N`) and, with `--directory redis://…`, on the least-loaded node.
  The policy is pure: `placement.py`.
- How a link reaches its exam's worker: the entry process (the only one listening on
  the public address, with the HTTP guard: per-address cap, header timeout) serves the
  pages itself and proxies each signalling WebSocket. It reads the socket's first frame,
  the `hello`, verifies the link's signature with the server's secret (the entry is the
  same server, holding the same INVIGIL_SECRET as its workers) and routes by the exam id
  inside the signed settings. Why not the exam id in the link's path: that changes every
  link format and every page, old links (already handed to students) would stop routing,
  and an unsigned path is a routing input anyone can forge; verifying the hello keeps the
  links as they are, keeps the token out of every URL, and routes only on ids the server
  itself signed. A hello that does not verify goes to the least-loaded worker, which
  answers it with the same error as a single process does. Signalling is a few frames a
  second per participant; media (UDP, ICE) never passes the entry: each worker's own
  sockets are in the ICE candidates it sends.
- A worker that dies is restarted. The entry closes its sockets with 1012 (service
  restart); the pages reconnect by themselves (sfu/static/signalling.js) and their next
  hello, on a live worker, recreates the exam from the link's signed settings, as a
  restarted single process does (sfu/registry.py).
- Several machines (`directory.py`): Redis holds each node's heartbeat (URL and counts,
  5 s TTL) and each exam's node (expiring with the exam); a new exam is placed under a
  short lock; a join that reaches another node is proxied to the exam's node the same
  way a worker is reached (the proxying node names the browser's address under a key
  derived from the secret, so join limits count browsers). Proxying, not redirecting:
  the page needs no change and the token never leaves the socket.
- Counts (`census.py`) feed the heartbeat and the operators' `/metrics` (`metrics.py`).

Modules: `placement` (pure policy), `worker` (one worker process), `workers` (the pool),
`entry` (the proxy, heartbeat, drain), `directory` (Redis), `census`, `metrics`.
"""
