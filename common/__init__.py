"""Helpers that every package of nfy may import: this package imports nothing else of ours.

- :mod:`common.devices`: checking a device a user names before any work is done;
- :mod:`common.files`: atomic file writes (a crash never leaves half a file) and folder swaps;
- :mod:`common.frozen`: pretrained networks used as fixed feature extractors;
- :mod:`common.workers`: worker processes that end with the process that started them.
"""
