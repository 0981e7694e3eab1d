#!/usr/bin/env python3
"""Replaces the text between the BEGIN/END bad-input markers of a markdown
file with a generated table: splice_table.py DOC TABLE."""
import sys

doc, table = sys.argv[1], sys.argv[2]
begin, end = "<!-- BEGIN bad-input table -->", "<!-- END bad-input table -->"
text = open(doc).read()
i, j = text.index(begin) + len(begin), text.index(end)
open(doc, "w").write(text[:i] + "\n" + open(table).read() + text[j:])
