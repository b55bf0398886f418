"""File and network I/O: atomic writes, the resumable downloader, safe archive extraction, Google's releases
and the model hub (shortcut names to local folders)."""
