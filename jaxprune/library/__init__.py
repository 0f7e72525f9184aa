"""Sub-model libraries: one base model, many masks over it, a router among them, and a server.

* `store`: the library folder (build, add, remove, info, export).
* `submodels`: a sub-model's stored arrays <-> masks; deriving it from the base.
* `classifier`, `routers`: which sub-model fits a prompt.
* `models`: the base in memory and the active sub-model.
* `engine`, `server`: the OpenAI-compatible HTTP server (the ``serve`` extra).
"""
