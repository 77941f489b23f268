"""
Generated blocks in the markdown docs: every benchmark and summary tool rewrites only its own block.

A block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. Tools that measure on this machine
(``mesc3d bench``, the node benchmark, the reliability runs, the model summary) replace their block and leave
everything else — other tools' blocks and the hand-written prose around them — as it was.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f'<!-- {name}:start -->', f'<!-- {name}:end -->'


def replace_block(doc: Path, name: str, body: str, heading: str) -> Path:
    """
    Put ``body`` into block ``name`` of ``doc``.

    A missing block goes at the end of section ``## heading`` (appended to the file, which is created if needed,
    when the section does not exist).
    """
    start, end = markers(name)
    block = f'{start}\n{body.strip()}\n{end}'
    text = doc.read_text() if doc.is_file() else ''
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif f'## {heading}\n' in text:
        section_at = text.index(f'## {heading}\n')
        next_at = text.find('\n## ', section_at + 1)
        if next_at < 0:
            text = text.rstrip('\n') + f'\n\n{block}\n'
        else:
            text = text[:next_at].rstrip('\n') + f'\n\n{block}\n' + text[next_at:]
    else:
        text = text.rstrip('\n') + f'\n\n## {heading}\n\n{block}\n'
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.lstrip('\n'))
    return doc
