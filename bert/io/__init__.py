"""File and network I/O: atomic writes, the resumable downloader, safe archive extraction, Google's releases
and the model hub (shortcut names to local folders); and settings read into dataclasses that check their
own fields (settings: TrainConfig's checks, and params.yaml's)."""
