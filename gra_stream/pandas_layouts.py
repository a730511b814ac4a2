"""The layouts pandas' `DataFrame.to_json` writes, read back as rows: a user's `df.to_json("seeds.json")`
is one JSON object on one line, by column (its default), by index, `split` or `table`. The `records`
layout is a JSON array and `lines=True` is JSON Lines, both read as such by readers.py.

Each layout is recognised strictly enough that no usable seed record matches it: its values are objects
and lists, never the text an instruction needs."""
from __future__ import annotations


def pandas_rows(doc: dict) -> list[dict] | None:
    """The rows of `doc` where it is a DataFrame in one of pandas' JSON layouts, else None."""
    keys = set(doc)
    if keys in ({"columns", "data"}, {"columns", "index", "data"}):  # orient="split" (index=False: no index)
        columns, data = doc["columns"], doc["data"]
        if isinstance(columns, list) and isinstance(data, list) \
                and all(isinstance(row, list) and len(row) == len(columns) for row in data):
            return [dict(zip(map(str, columns), row)) for row in data]
        return None
    if keys == {"schema", "data"}:  # orient="table"
        schema, data = doc["schema"], doc["data"]
        if isinstance(schema, dict) and "fields" in schema and isinstance(data, list) \
                and all(isinstance(row, dict) for row in data):
            return data
        return None
    values = list(doc.values())
    if not values or not all(isinstance(v, dict) for v in values) or any(v.keys() != values[0].keys() for v in values):
        return None
    if all(key.isdigit() for key in values[0]):  # orient="columns", the default: column -> {row label: value}
        return [{column: doc[column][label] for column in doc} for label in values[0]]
    if all(key.isdigit() for key in doc):  # orient="index": row label -> row
        return values
    return None
