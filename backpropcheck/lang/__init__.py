"""The expression language: dims, the IR, the op table, the parser and shape inference."""
