"""Weight-file readers: safetensors, torch checkpoints and GGUF behind one `WeightReader` seam.

`open_weights(path)` turns a file or model folder into readers; callers never name a concrete
format. The torch reader (and with it torch itself) is imported only when a torch file is opened.
"""

from monitor.formats.base import CHUNK_BYTES, ByteSource, LocalFile, WeightReader
from monitor.formats.discover import detect_format, find_weight_files, open_reader, open_weights

__all__ = [
    "CHUNK_BYTES",
    "ByteSource",
    "LocalFile",
    "WeightReader",
    "detect_format",
    "find_weight_files",
    "open_reader",
    "open_weights",
]
