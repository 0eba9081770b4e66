"""OData query options of the Service Layer emulator, compiled to polars.

Covers what SAP documents for the Service Layer (`../shared/reference/sap_b1_service_layer.md`
section 1.3/1.6): `$filter` with `eq ne gt ge lt le`, `and or not`, parentheses and the functions
`startswith endswith contains substringof`; `$select`, `$orderby`, `$top`, `$skip`, `$count`
(`$inlinecount=allpages` on v1). Literals: strings with `''` escaping, numbers, `null`,
`true`/`false`, dates (`'2026-04-30'`, bare `2026-04-30`, `'20260430'`, `datetime'2026-04-30'`,
`'2026-04-30T10:00:00'`; the time part of a date literal is ignored) and times (`'10:15'`,
`'10:15:30'`, `'1015'`, `'101530'`), which SAP says are effective to the minute only: a time
comparison therefore compares hours and minutes. Enum properties accept the DB code as well as the
member name (`CardType eq 'C'` is `CardType eq 'cCustomer'`).

Anything else is refused with `ODataError` (HTTP 400, Service Layer error code -1000), as a real
Service Layer refuses what it does not understand: the emulator must not be kinder than SAP.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl

INVALID_QUERY_CODE = -1000

# Enum member names by property and DB code (reference section 2.1), so that filters may use
# either form, as the Service Layer allows.
_YES_NO = {"Y": "tYES", "N": "tNO"}
ENUM_CODES: dict[str, dict[str, str]] = {
    "CardType": {"C": "cCustomer", "S": "cSupplier", "L": "cLid"},
    "CompanyPrivate": {"C": "cCompany", "I": "cPrivate", "G": "cGovernment", "E": "cEmployee"},
    "DocumentStatus": {"O": "bost_Open", "C": "bost_Close", "P": "bost_Paid", "D": "bost_Delivered"},
    "LineStatus": {"O": "bost_Open", "C": "bost_Close"},
    "CancelStatus": {"Y": "csYes", "N": "csNo", "C": "csCancellation"},
    "DocType": {"I": "dDocument_Items", "S": "dDocument_Service"},
    "AddressType": {"B": "bo_BillTo", "S": "bo_ShipTo"},
    "Type": {"A": "db_Alpha", "M": "db_Memo", "N": "db_Numeric", "D": "db_Date", "B": "db_Float"},
    **{
        name: _YES_NO
        for name in (
            "Valid", "Frozen", "Cancelled", "SalesItem", "InventoryItem", "PurchaseItem",
            "Inactive", "BlockSendingMarketingContent", "Locked", "Rounding", "Nettable",
            "DropShip", "VatLiable", "Mandatory",
        )
    },
}


class ODataError(ValueError):
    """An invalid or unsupported query: HTTP 400 with Service Layer error code -1000."""

    code = INVALID_QUERY_CODE


@dataclass
class Query:
    """Parsed system query options of one request."""

    filter: str | None = None
    select: list[str] | None = None          # None = every property
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (property, descending)
    top: int | None = None
    skip: int = 0
    count: bool = False                      # v2 `$count=true`
    inlinecount: bool = False                # v1 `$inlinecount=allpages`
    passthrough: dict[str, str] = field(default_factory=dict)  # non-$ parameters, kept in nextLinks

    def canonical_key(self) -> tuple:
        """What identifies the result set (not the page): used to cache row positions."""
        return (self.filter or "", tuple(self.orderby))


_SUPPORTED = {"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$inlinecount", "$format"}
_REFUSED = {"$expand", "$apply", "$search", "$levels", "$compute", "$skiptoken", "$deltatoken"}


def _non_negative_int(name: str, raw: str) -> int:
    if not re.fullmatch(r"\d+", raw.strip()):
        raise ODataError(f"Invalid value '{raw}' for query option '{name}': a non-negative integer is expected.")
    return int(raw)


def parse_query(params: Mapping[str, str] | list[tuple[str, str]]) -> Query:
    """Validate and split the query options; raises ODataError for anything SAP would refuse."""
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    q = Query()
    seen: set[str] = set()
    for name, raw in items:
        if not name.startswith("$"):
            q.passthrough[name] = raw
            continue
        if name in seen:
            raise ODataError(f"Query option '{name}' is specified more than once.")
        seen.add(name)
        if name in _REFUSED:
            raise ODataError(f"Query option '{name}' is not supported for this request.")
        if name not in _SUPPORTED:
            raise ODataError(f"Unknown query option '{name}'.")
        if name == "$filter":
            if not raw.strip():
                raise ODataError("Empty $filter expression.")
            q.filter = raw
        elif name == "$select":
            names = [p.strip() for p in raw.split(",")]
            if any(not p for p in names):
                raise ODataError(f"Invalid $select '{raw}'.")
            if "*" in names:
                q.select = None
            else:
                for p in names:
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p):
                        raise ODataError(f"Invalid property '{p}' in $select: only top-level properties can be selected.")
                q.select = list(dict.fromkeys(names))
        elif name == "$orderby":
            for part in raw.split(","):
                tokens = part.split()
                if not tokens or len(tokens) > 2 or (len(tokens) == 2 and tokens[1] not in ("asc", "desc")):
                    raise ODataError(f"Invalid $orderby '{raw}'.")
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tokens[0]):
                    raise ODataError(f"Invalid property '{tokens[0]}' in $orderby.")
                q.orderby.append((tokens[0], len(tokens) == 2 and tokens[1] == "desc"))
        elif name == "$top":
            q.top = _non_negative_int(name, raw)
        elif name == "$skip":
            q.skip = _non_negative_int(name, raw)
        elif name == "$count":
            if raw not in ("true", "false"):
                raise ODataError(f"Invalid value '{raw}' for $count: true or false expected.")
            q.count = raw == "true"
        elif name == "$inlinecount":
            if raw not in ("allpages", "none"):
                raise ODataError(f"Invalid value '{raw}' for $inlinecount: allpages or none expected.")
            q.inlinecount = raw == "allpages"
        elif name == "$format" and raw != "json":
            raise ODataError("Only $format=json is supported.")
    return q


# ---------------------------------------------------------------------------------------------
# $filter
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<typed>(?:datetime|datetimeoffset|time|guid)'(?:[^']|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w.])
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)(?![\w.])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)

_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"startswith", "endswith", "contains", "substringof"}
_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}

# Resolves a property name to (expression, dtype); raises ODataError for unknown properties.
Resolver = Callable[[str], tuple[pl.Expr, pl.DataType]]


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ODataError(f"Syntax error in $filter at position {pos}: '{text[pos:pos + 20]}'.")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return out


# Operand kinds produced by the parser.
@dataclass
class _Prop:
    name: str
    expr: pl.Expr
    dtype: pl.DataType


@dataclass
class _Lit:
    kind: str      # string | number | null | bool | datetime
    value: object
    text: str


@dataclass
class _Bool:
    expr: pl.Expr


def _is_string(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Enum, pl.Categorical))


def _as_string(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return expr if dtype == pl.String else expr.cast(pl.String)


def _parse_date(lit: _Lit) -> dt.date:
    text = str(lit.value)
    for pattern, fmt in (
        (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
        (r"\d{8}", "%Y%m%d"),
    ):
        m = re.match(pattern, text)
        if m and (len(text) == m.end() or text[m.end()] in "T "):
            try:
                return dt.datetime.strptime(m.group(), fmt).date()
            except ValueError:
                break
    raise ODataError(f"Invalid date literal {lit.text}.")


def _parse_minutes(lit: _Lit) -> int:
    text = str(lit.value)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?", text) or re.fullmatch(
        r"(\d{2})(\d{2})(\d{2})?", text
    )
    if not m:
        # A full timestamp given for a time property: keep its clock time.
        m = re.fullmatch(r"\d{4}-\d{2}-\d{2}T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?", text)
    if not m:
        raise ODataError(f"Invalid time literal {lit.text}.")
    hours, minutes = int(m.group(1)), int(m.group(2))
    seconds = int(m.group(3) or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ODataError(f"Invalid time literal {lit.text}.")
    return hours * 60 + minutes


def _compare(expr: pl.Expr, op: str, value: object) -> pl.Expr:
    rhs = value if isinstance(value, pl.Expr) else pl.lit(value)
    if op == "eq":
        return expr == rhs
    if op == "ne":
        return expr != rhs
    if op == "gt":
        return expr > rhs
    if op == "ge":
        return expr >= rhs
    if op == "lt":
        return expr < rhs
    return expr <= rhs


class _Parser:
    def __init__(self, text: str, resolve: Resolver, case_insensitive: bool):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.resolve = resolve
        self.ci = case_insensitive

    # -- token helpers --------------------------------------------------------------------
    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise ODataError("Unexpected end of $filter expression.")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise ODataError(f"Syntax error in $filter at position {tok.pos}: expected '{text}', got '{tok.text}'.")

    def at_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "ident" and tok.text == word

    # -- grammar ----------------------------------------------------------------------------
    def parse(self) -> pl.Expr:
        node = self.or_expr()
        if self.peek() is not None:
            tok = self.peek()
            raise ODataError(f"Syntax error in $filter at position {tok.pos}: unexpected '{tok.text}'.")
        return self.to_bool(node)

    def or_expr(self):
        left = self.and_expr()
        while self.at_word("or"):
            self.take()
            right = self.and_expr()
            left = _Bool(self.to_bool(left) | self.to_bool(right))
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.at_word("and"):
            self.take()
            right = self.not_expr()
            left = _Bool(self.to_bool(left) & self.to_bool(right))
        return left

    def not_expr(self):
        if self.at_word("not"):
            self.take()
            return _Bool(~self.to_bool(self.not_expr()))
        return self.comparison()

    def comparison(self):
        left = self.primary()
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text in _COMPARISONS:
            self.take()
            right = self.primary()
            return _Bool(self.compile_comparison(left, tok.text, right))
        return left

    def primary(self):
        tok = self.take()
        if tok.text == "(":
            node = self.or_expr()
            self.expect(")")
            return node
        if tok.kind == "string":
            return _Lit("string", tok.text[1:-1].replace("''", "'"), tok.text)
        if tok.kind == "typed":
            prefix, _, rest = tok.text.partition("'")
            value = rest[:-1].replace("''", "'")
            return _Lit("datetime" if prefix.startswith("datetime") else "string", value, tok.text)
        if tok.kind == "datetime":
            return _Lit("datetime", tok.text, tok.text)
        if tok.kind == "number":
            raw = tok.text.rstrip("mMdDfFlL")
            value: object = float(raw) if any(c in raw for c in ".eE") else int(raw)
            return _Lit("number", value, tok.text)
        if tok.kind == "ident":
            if tok.text == "null":
                return _Lit("null", None, tok.text)
            if tok.text in ("true", "false"):
                return _Lit("bool", tok.text == "true", tok.text)
            if tok.text in _FUNCTIONS and self.peek() is not None and self.peek().text == "(":
                return self.function(tok.text)
            if tok.text in _COMPARISONS or tok.text in ("and", "or", "not"):
                raise ODataError(f"Syntax error in $filter at position {tok.pos}: unexpected '{tok.text}'.")
            if "/" in tok.text:
                raise ODataError(
                    f"Property path '{tok.text}' is not supported in $filter: collection properties "
                    "cannot be filtered (use QueryService_PostQuery with $crossjoin)."
                )
            expr, dtype = self.resolve(tok.text)
            return _Prop(tok.text, expr, dtype)
        raise ODataError(f"Syntax error in $filter at position {tok.pos}: unexpected '{tok.text}'.")

    def function(self, name: str):
        self.expect("(")
        args = [self.primary()]
        while self.peek() is not None and self.peek().text == ",":
            self.take()
            args.append(self.primary())
        self.expect(")")
        if len(args) != 2:
            raise ODataError(f"Function '{name}' takes two arguments.")
        prop, lit = (args[1], args[0]) if name == "substringof" else (args[0], args[1])
        if not isinstance(prop, _Prop) or not isinstance(lit, _Lit) or lit.kind != "string":
            raise ODataError(f"Function '{name}' expects a property and a string literal.")
        if not _is_string(prop.dtype):
            raise ODataError(f"Function '{name}' needs a string property; '{prop.name}' is not one.")
        expr = _as_string(prop.expr, prop.dtype)
        value = str(lit.value)
        if self.ci:
            expr, value = expr.str.to_lowercase(), value.lower()
        if name == "startswith":
            return _Bool(expr.str.starts_with(value))
        if name == "endswith":
            return _Bool(expr.str.ends_with(value))
        return _Bool(expr.str.contains(value, literal=True))

    def to_bool(self, node) -> pl.Expr:
        if isinstance(node, _Bool):
            return node.expr
        if isinstance(node, _Prop) and node.dtype == pl.Boolean:
            return node.expr
        what = node.text if isinstance(node, _Lit) else node.name
        raise ODataError(f"Expression '{what}' is not a boolean condition.")

    # -- typing --------------------------------------------------------------------------
    def compile_comparison(self, left, op: str, right) -> pl.Expr:
        if isinstance(left, _Lit) and isinstance(right, _Prop):
            left, right, op = right, left, _FLIP[op]
        if isinstance(left, _Bool) and isinstance(right, _Lit) and right.kind == "bool" and op in ("eq", "ne"):
            return left.expr if (right.value == (op == "eq")) else ~left.expr
        if isinstance(left, _Prop) and isinstance(right, _Prop):
            return self.prop_vs_prop(left, op, right)
        if not isinstance(left, _Prop) or not isinstance(right, _Lit):
            raise ODataError("A comparison needs a property on at least one side.")
        return self.prop_vs_lit(left, op, right)

    def prop_vs_prop(self, a: _Prop, op: str, b: _Prop) -> pl.Expr:
        if _is_string(a.dtype) and _is_string(b.dtype):
            return _compare(_as_string(a.expr, a.dtype), op, _as_string(b.expr, b.dtype))
        if a.dtype.is_numeric() and b.dtype.is_numeric():
            return _compare(a.expr, op, b.expr)
        if a.dtype == b.dtype:
            return _compare(a.expr, op, b.expr)
        raise ODataError(f"Cannot compare '{a.name}' with '{b.name}': different types.")

    def prop_vs_lit(self, prop: _Prop, op: str, lit: _Lit) -> pl.Expr:
        if lit.kind == "null":
            if op == "eq":
                return prop.expr.is_null()
            if op == "ne":
                return prop.expr.is_not_null()
            raise ODataError(f"Operator '{op}' cannot be used with null.")
        dtype = prop.dtype
        if dtype == pl.Date or isinstance(dtype, pl.Datetime):
            if lit.kind not in ("string", "datetime"):
                raise ODataError(f"'{prop.name}' is a date: {lit.text} is not a date literal.")
            expr = prop.expr if dtype == pl.Date else prop.expr.dt.date()
            return _compare(expr, op, _parse_date(lit))
        if dtype == pl.Time:
            if lit.kind not in ("string", "datetime", "number"):
                raise ODataError(f"'{prop.name}' is a time: {lit.text} is not a time literal.")
            if lit.kind == "number":
                lit = _Lit("string", str(lit.value).zfill(4), lit.text)
            minutes = prop.expr.dt.hour().cast(pl.Int32) * 60 + prop.expr.dt.minute().cast(pl.Int32)
            return _compare(minutes, op, _parse_minutes(lit))
        if _is_string(dtype):
            if lit.kind not in ("string", "datetime"):
                raise ODataError(f"'{prop.name}' is a string: {lit.text} is not a string literal.")
            value = str(lit.value)
            codes = ENUM_CODES.get(prop.name)
            if codes and value in codes:
                value = codes[value]
            expr = _as_string(prop.expr, dtype)
            if self.ci:
                expr, value = expr.str.to_lowercase(), value.lower()
            return _compare(expr, op, value)
        if dtype.is_numeric():
            if lit.kind != "number":
                raise ODataError(f"'{prop.name}' is a number: {lit.text} is not a numeric literal.")
            return _compare(prop.expr, op, lit.value)
        if dtype == pl.Boolean:
            if lit.kind != "bool":
                raise ODataError(f"'{prop.name}' is a boolean: {lit.text} is not true or false.")
            return _compare(prop.expr, op, lit.value)
        raise ODataError(f"Property '{prop.name}' cannot be used in $filter.")


def compile_filter(text: str, resolve: Resolver, *, case_insensitive: bool = False) -> pl.Expr:
    """Compile a `$filter` expression to a boolean polars expression (ODataError if invalid)."""
    return _Parser(text, resolve, case_insensitive).parse()


def schema_resolver(
    schema: Mapping[str, pl.DataType],
    extras: Mapping[str, tuple[pl.Expr, pl.DataType]] | None = None,
    collections: set[str] | frozenset[str] = frozenset(),
    entity: str = "entity",
) -> Resolver:
    """Resolver over a frame's scalar columns plus computed/constant properties."""
    extras = extras or {}

    def resolve(name: str) -> tuple[pl.Expr, pl.DataType]:
        if name in collections:
            raise ODataError(f"Collection property '{name}' of '{entity}' cannot be used here.")
        if name in schema:
            dtype = schema[name]
            if isinstance(dtype, (pl.List, pl.Struct)):
                raise ODataError(f"Collection property '{name}' of '{entity}' cannot be used here.")
            return pl.col(name), dtype
        if name in extras:
            return extras[name]
        raise ODataError(f"Property '{name}' of '{entity}' is invalid.")

    return resolve
