"""Child process of documents.py: a PDF on stdin, its pages' text on stdout joined by form feeds.

Run as `python -m localxai.pdftext MAX_CHARS MEMORY_BYTES CPU_SECONDS`; it limits itself before it
reads a byte. Exit 3: encrypted; 4: more text than MAX_CHARS; anything else non-zero: unreadable.
"""

from __future__ import annotations

import io
import resource
import sys


def main(max_chars: int, memory: int, cpu_s: int) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    import pypdf  # after the limits: a hostile file meets them from the first byte parsed

    reader = pypdf.PdfReader(io.BytesIO(sys.stdin.buffer.read()))
    if reader.is_encrypted and not reader.decrypt(""):
        return 3
    written = 0
    for number, page in enumerate(reader.pages):
        text = ("\f" if number else "") + (page.extract_text() or "")
        written += len(text)
        if written > max_chars:
            return 4
        sys.stdout.write(text)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8", errors="replace")  # type: ignore[union-attr]
    sys.exit(main(*(int(a) for a in sys.argv[1:4])))
