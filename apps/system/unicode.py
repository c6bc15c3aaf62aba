"""Text that JSON can spell but Unicode cannot hold.

JSON may carry a lone surrogate ("\\ud800"): Python's json module accepts it, and the string then fails later, in the
database (SQLite cannot encode it), a tokenizer or a log line, as a 500. Every JSON API and socket checks what it
parsed here first and refuses such text with a message instead.
"""


def lone_surrogate(value) -> str | None:
    """A description of the first lone surrogate anywhere in a parsed JSON value (keys included), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError as e:
                return f"the text holds a lone surrogate ({item[e.start:e.end]!a}), which is not Unicode: send valid UTF-8"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
