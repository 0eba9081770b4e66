"""Product links in the mapping: how a product's `url` and `image_url` are made from an SAP item.

Each of `products.url` and `products.image_url` is a `ProductLink`: a `template` on item fields
(`https://shop.example.com/p/{ItemCode}`, any OITM field or UDF in braces), a `udf` holding the
link (an absolute URL, or a path relative to `base_url`), or both (the UDF when it is set, else
the template). Templates and base URLs are checked at start to be absolute http(s) URLs, so a bad
one is a mapping error naming its key; a bad value of one item is dealt with when products are
built (lib/transforms/products.py: that field is left out for that item, with a warning).
"""

from __future__ import annotations

import re
import string

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sap_ometria_assets.lib.ometria.models import HTTP_SITE, HTTP_URL, MAX_URL_LENGTH

ITEM_FIELD = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The literal start of a template must name the site: scheme and host, before any placeholder.
_SITE = re.compile(rf"^{HTTP_SITE}[/?#]")


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """(literal text, item field or None) pairs of a template, in order."""
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]


def check_template(value: str) -> str:
    """An absolute http(s) URL with one or more `{ItemField}` placeholders, or ValueError."""
    try:
        parts = [p for p in string.Formatter().parse(value)]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    fields = [f for _, f, _, _ in parts if f is not None]
    if not fields:
        raise ValueError("needs at least one {ItemField} placeholder (e.g. {ItemCode}); the same "
                         "link on every product is not a product link")
    for _, f, spec, conversion in parts:
        if f is not None and (not re.match(ITEM_FIELD, f) or spec or conversion):
            raise ValueError(f"placeholder {{{f}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a plain item field name")
    if not _SITE.match(parts[0][0]):
        raise ValueError("must start with http:// or https:// and a host name before the first "
                         "placeholder (e.g. https://shop.example.com/p/{ItemCode})")
    sample = "".join(literal + ("x" if f is not None else "") for literal, f, _, _ in parts)
    if not re.fullmatch(HTTP_URL, sample):
        raise ValueError("is not an absolute http(s) URL once filled in (spaces and characters "
                         "such as \" < > { } | \\ ^ ` must be percent-encoded)")
    return value


class ProductLink(BaseModel):
    """One product link (`url` or `image_url`): a template, a UDF, or both (UDF first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    udf: str | None = Field(default=None, pattern=r"^U_[A-Za-z0-9_]+$")
    base_url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v)

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(HTTP_URL, v):
            raise ValueError("must be an absolute http(s) URL (e.g. https://cdn.example.com/images/)")
        return v

    @model_validator(mode="after")
    def _shape(self) -> ProductLink:
        if self.template is None and self.udf is None:
            raise ValueError("give a `template`, a `udf`, or both")
        if self.base_url is not None and self.udf is None:
            raise ValueError("`base_url` completes relative paths held in the `udf`: it needs a `udf`")
        return self

    @property
    def fields(self) -> list[str]:
        """Every item field the link reads (the UDF, then the template's placeholders)."""
        out = [self.udf] if self.udf else []
        for _, f in template_parts(self.template or ""):
            if f is not None and f not in out:
                out.append(f)
        return out
