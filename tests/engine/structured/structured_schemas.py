"""Twenty varied JSON schemas for the structured-output tests (nested objects, arrays, enums,
bounded numbers, required/optional fields, anyOf, const, patterns, nullable)."""

from __future__ import annotations

from typing import Any

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}, "ok": {"type": "boolean"}},
        "required": ["age", "ok"],
        "additionalProperties": False,
    },
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4}},
        "required": ["tags"],
    },
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
                "required": ["id"],
            }
        },
        "required": ["user"],
    },
    {
        "type": "object",
        "properties": {
            "temp": {"type": "number", "minimum": -50, "maximum": 60},
            "unit": {"enum": ["C", "F"]},
        },
        "required": ["temp", "unit"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"value": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}},
        "required": ["value"],
    },
    {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                    "required": ["x", "y"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["points"],
    },
    {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 20}, "subtitle": {"type": "string"}},
        "required": ["title"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"kind": {"const": "event"}, "n": {"type": "integer"}},
        "required": ["kind"],
    },
    {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "shape": {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": "circle"},
                            "r": {"type": "number", "exclusiveMinimum": 0},
                        },
                        "required": ["type", "r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": "square"},
                            "side": {"type": "integer", "minimum": 1},
                        },
                        "required": ["type", "side"],
                        "additionalProperties": False,
                    },
                ]
            }
        },
        "required": ["shape"],
    },
    {
        "type": "object",
        "properties": {
            "matrix": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                "maxItems": 3,
            }
        },
        "required": ["matrix"],
    },
    {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "integer"},
            "c": {"type": "boolean"},
            "d": {"type": "null"},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"nickname": {"type": ["string", "null"]}, "score": {"type": "number"}},
        "required": ["nickname", "score"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "minLength": 2, "maxLength": 8},
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "sku": {"type": "string"},
                                "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                            },
                            "required": ["sku", "qty"],
                        },
                        "maxItems": 2,
                    },
                },
                "required": ["id", "items"],
            }
        },
        "required": ["order"],
    },
    {
        "type": "object",
        "properties": {
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 5}
        },
        "required": ["flags"],
    },
    {
        "type": "object",
        "properties": {
            "level": {"type": "integer", "enum": [1, 2, 3]},
            "label": {"enum": ["low", "mid", "high", None]},
        },
        "required": ["level", "label"],
    },
    {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "weight": {"type": "number"}},
                "required": ["name"],
            }
        },
        "type": "object",
        "properties": {
            "root": {"$ref": "#/$defs/node"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
        },
        "required": ["root", "children"],
    },
    {
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "count": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 20},
            "mode": {"anyOf": [{"const": "fast"}, {"const": "slow"}]},
        },
        "required": ["ratio", "count", "mode"],
        "additionalProperties": False,
    },
]
