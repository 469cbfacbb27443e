"""Forms generated from JSON Schema (Run an agent, Resume with input, Respond to an approval).

Each top-level property of an object schema becomes a field of the matching kind: a string is a
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


class SchemaForm(forms.Form):
    """A form for one JSON Schema. `value()` is the assembled JSON once `is_valid()`."""

    def __init__(self, *args: Any, schema: dict[str, Any] | None, prefix: str = "", **kwargs: Any):
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
        required = set(self.schema.get("required") or [])
        for name, prop in props.items():
            self.fields[name] = _field_for(
                name, prop if isinstance(prop, dict) else {}, name in required
            )

    def value(self) -> Any:
        data = self.cleaned_data
        if self.raw_json:
            parsed = data.get(JSON_FIELD)
            return (
                {} if parsed is None and self.schema.get("type", "object") == "object" else parsed
            )
        result: dict[str, Any] = {}
        props = self.schema.get("properties") or {}
        for name in self.fields:
            value = data.get(name)
            if value is None or value == "":
                continue
            kind = _types(props.get(name) or {})[0]
            if isinstance(value, Decimal):
                value = (
                    int(value)
                    if value == value.to_integral_value() and kind == "integer"
                    else float(value)
                )
            if hasattr(value, "isoformat"):
                value = value.isoformat()
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
        name = path.split(".", 1)[1] if "." in path else ""
        name = name.split(".")[0].split("[")[0]
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
