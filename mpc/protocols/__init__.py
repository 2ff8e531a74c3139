"""Protocols on replicated shares, each vectorised over whole columns.

- ``arith``    local linear operations, multiplication, dot product, truncation, opening
"""
