"""Forms generated from JSON Schema (Run an agent, Resume with input, Respond to an approval).

Each top-level property of an object schema (and each property of an object nested one level
down, like a tool call's `arguments`) becomes a field of the matching kind: a string is a
text input (a textarea when long, a select when it has an enum, a date/time input for those
formats), integer and number are number inputs, boolean a checkbox, and objects or arrays a
JSON textarea. The value assembled from the fields is then checked against the whole schema
with jsonschema on the server, and each violation is put back on the field it names.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms

from executions.schemas import violations

JSON_FIELD = "__json__"


class JsonTextField(forms.CharField):
    """A textarea holding JSON; cleaned to the parsed value."""

    widget = forms.Textarea(attrs={"class": "code", "rows": 6, "spellcheck": "false"})

    def __init__(self, *args: Any, expect: str | None = None, **kwargs: Any) -> None:
        self.expect = expect
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if text in (None, ""):
            return None
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if self.expect == "object" and not isinstance(parsed, dict):
            raise forms.ValidationError("must be a JSON object")
        if self.expect == "array" and not isinstance(parsed, list):
            raise forms.ValidationError("must be a JSON array")
        return parsed


def _types(prop: dict[str, Any]) -> list[str]:
    kind = prop.get("type")
    if isinstance(kind, list):
        return [k for k in kind if k != "null"] or ["string"]
    if kind:
        return [kind]
    if "enum" in prop:
        return ["enum"]
    if "properties" in prop:
        return ["object"]
    return ["any"]


def _label(name: str, prop: dict[str, Any]) -> str:
    return str(prop.get("title") or name.replace("_", " ").capitalize())


def _field_for(name: str, prop: dict[str, Any], required: bool) -> forms.Field:
    kind = _types(prop)[0]
    common: dict[str, Any] = {
        "required": required,
        "label": _label(name, prop),
        "help_text": prop.get("description", ""),
    }
    default = prop.get("default")
    if "enum" in prop:
        choices = [(json.dumps(v), str(v)) for v in prop["enum"]]
        if not required:
            choices = [("", "—"), *choices]
        field = forms.TypedChoiceField(
            choices=choices, coerce=json.loads, empty_value=None, **common
        )
        if default is not None:
            field.initial = json.dumps(default)
        return field
    if kind == "string":
        fmt = prop.get("format")
        attrs: dict[str, Any] = {}
        if "minLength" in prop:
            attrs["minlength"] = prop["minLength"]
        if "pattern" in prop:
            attrs["pattern"] = prop["pattern"]
        if fmt == "date":
            widget: forms.Widget = forms.DateInput(attrs={"type": "date", **attrs})
        elif fmt == "date-time":
            widget = forms.DateTimeInput(attrs={"type": "datetime-local", **attrs})
        elif fmt == "email":
            widget = forms.EmailInput(attrs=attrs)
        elif fmt in {"uri", "url"}:
            widget = forms.URLInput(attrs=attrs)
        elif (
            prop.get("maxLength", 0) > 200
            or prop.get("format") == "textarea"
            or (
                "maxLength" not in prop
                and name in {"text", "message", "body", "prompt", "question"}
            )
        ):
            widget = forms.Textarea(attrs={"rows": 4, **attrs})
        else:
            widget = forms.TextInput(attrs=attrs)
        field = forms.CharField(
            max_length=prop.get("maxLength"),
            strip=False,
            widget=widget,
            empty_value=None,
            **common,
        )
    elif kind == "integer":
        field = forms.IntegerField(
            min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common
        )
    elif kind == "number":
        field = forms.DecimalField(
            min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common
        )
        field.widget.attrs["step"] = "any"
    elif kind == "boolean":
        # An unchecked box is an answer (false), so booleans are never "required" in the form.
        field = forms.BooleanField(
            required=False, label=common["label"], help_text=common["help_text"]
        )
    else:
        expect = kind if kind in {"object", "array"} else None
        field = JsonTextField(expect=expect, **common)
        if default is not None:
            field.initial = json.dumps(default, indent=2)
        return field
    if default is not None:
        field.initial = default
    return field


NESTED = "__"  # field name of a nested property: "arguments__amount" for arguments.amount


def _flat_props(props: dict[str, Any], required: set[str]) -> list[tuple[str, dict, bool]]:
    """(field name, property, required) for every property, one level of nested objects with
    their own properties opened into fields of their own (a tool call's `arguments`)."""
    flat = []
    for name, prop in props.items():
        prop = prop if isinstance(prop, dict) else {}
        inner = prop.get("properties")
        if _types(prop)[0] == "object" and isinstance(inner, dict) and inner:
            inner_required = set(prop.get("required") or [])
            for key, sub in inner.items():
                sub = dict(sub) if isinstance(sub, dict) else {}
                sub.setdefault("title", f"{_label(name, prop)} · {_label(key, sub).lower()}")
                needed = name in required and key in inner_required
                flat.append((f"{name}{NESTED}{key}", sub, needed))
        else:
            flat.append((name, prop, name in required))
    return flat


def _initial(prop: dict[str, Any], value: Any) -> Any:
    """A JSON value as the initial value of its field."""
    if "enum" in prop or _types(prop)[0] in {"object", "array", "any"}:
        return json.dumps(value, indent=2 if isinstance(value, dict | list) else None)
    return value


def _number(value: Decimal) -> int | float:
    # 180 stays 180, not 180.0: a whole number is an int in JSON whatever the schema's type.
    return int(value) if value == value.to_integral_value() else float(value)


class SchemaForm(forms.Form):
    """A form for one JSON Schema. `value()` is the assembled JSON once `is_valid()`;
    `value=` fills the fields from an existing JSON value (editing a payload)."""

    def __init__(
        self,
        *args: Any,
        schema: dict[str, Any] | None,
        prefix: str = "",
        value: Any = None,
        **kwargs: Any,
    ):
        super().__init__(*args, prefix=prefix or None, **kwargs)
        self.schema = schema or {}
        self.error_prefix = "input"
        props = (
            self.schema.get("properties") if self.schema.get("type", "object") == "object" else None
        )
        self.raw_json = not isinstance(props, dict) or not props
        if self.raw_json:
            # No describable properties: one JSON editor for the whole value.
            example = {} if self.schema.get("type", "object") == "object" else None
            self.fields[JSON_FIELD] = JsonTextField(
                label="Input (JSON)",
                required=False,
                initial=json.dumps(self.schema.get("default", example), indent=2)
                if example is not None or "default" in self.schema
                else "",
                help_text="Any JSON value this agent accepts.",
            )
            return
        for name, prop, required in _flat_props(props, set(self.schema.get("required") or [])):
            self.fields[name] = _field_for(name.split(NESTED)[-1], prop, required)
            if isinstance(value, dict):
                head, _, key = name.partition(NESTED)
                inner = value.get(head) if key else value
                if isinstance(inner, dict) and (key or head) in inner:
                    self.initial[name] = _initial(prop, inner[key or head])

    def value(self) -> Any:
        data = self.cleaned_data
        if self.raw_json:
            parsed = data.get(JSON_FIELD)
            return (
                {} if parsed is None and self.schema.get("type", "object") == "object" else parsed
            )
        result: dict[str, Any] = {}
        for name in self.fields:
            value = data.get(name)
            if value is None or value == "":
                continue
            if isinstance(value, Decimal):
                value = _number(value)
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            head, _, key = name.partition(NESTED)
            if key:
                result.setdefault(head, {})[key] = value
            else:
                result[name] = value
        return result

    def full_clean(self) -> None:
        super().full_clean()
        if not self.is_bound or self._errors:
            return
        # The whole value against the whole schema (formats, patterns, nested rules…).
        for problem in violations(self.schema, self.value(), prefix=self.error_prefix):
            self.add_schema_error(problem["field"], problem["message"])

    def add_schema_error(self, path: str, message: str) -> None:
        """Put a server-side violation (e.g. `input.amount`) on the field it names."""
        parts = [p.split("[")[0] for p in path.split(".")[1:]]
        nested = NESTED.join(parts[:2])
        name = nested if nested in self.fields else (parts[0] if parts else "")
        target = name if name in self.fields else (JSON_FIELD if self.raw_json else None)
        if target and target in self.fields:
            if target not in self.errors or message not in self.errors[target]:
                self.add_error(target, message)
        else:
            self.add_error(None, f"{path}: {message}")


def field_kind(field: forms.BoundField) -> str:
    widget = field.field.widget
    if isinstance(widget, forms.CheckboxInput):
        return "checkbox"
    if isinstance(widget, forms.Textarea):
        return "textarea"
    return "input"
