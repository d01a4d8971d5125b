"""Dataset import: safe zip reading, annotation formats, leak-free splits, the importer.

Torch-free: the API vets uploads with `safezip` and `formats.detect_format`; the worker runs
`importer.run_import` on the cpu queue.
"""
