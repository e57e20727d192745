"""A dataset's declaration compiled once into one Python function per image.

The interpreted engine (``engine.run``) sends every field of every record through a
rule object: a method call, attribute reads of the rule's options, ``Image`` helpers.
``compile_rules`` writes, once per dataset, the source of a function that does the
same steps with the options as constants and the common rules (``Text``, ``Enum``,
``Int``, ``Unit``, ``Commune``, ``Timestamp``, ``Date``, ``CitizenId`` and the ``require_text``
precheck) inlined, and ``exec``s it; any other rule, a rule subclass's hook (``read``,
``parse``, ``too_far``) and the record checks are called as they are. The declaration
stays the one description of the dataset; the interpreted engine stays the reference,
and the two must give identical results (records, flags, rejections) for any input
(``tests/unit/stream_processors/test_standardizers_compiled.py``).

The source is kept on the function as ``__std_source__`` for whoever debugs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from schemas.domain.citizen_id import CitizenIdRejection, check_citizen_id
from schemas.domain.text import normalize_text
from stream_processors.standardizers import engine
from stream_processors.standardizers.engine import (
    CitizenId,
    Commune,
    Context,
    DatasetRules,
    Date,
    Enum,
    Image,
    ImageFunction,
    Int,
    Rule,
    Text,
    Timestamp,
    Unit,
    run_with,
)
from stream_processors.standardizers.result import Invalid, Rejected, Standardized

__all__ = ["CompiledRules", "compile_rules"]


class _Writer:
    """Generated lines and the constants they name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}

    def const(self, value: Any, prefix: str = "K") -> str:
        name = f"{prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


class _Compiler:
    def __init__(self, rules: DatasetRules) -> None:
        self.rules = rules
        self.w = _Writer()
        # Fields whose normalized text a recognised ``require_text`` left in img.texts, by
        # the local variable that holds it; None: a precheck we cannot see into ran, so
        # img.texts is read as the interpreted engine reads it.
        self.texts: dict[str, str] | None = {}
        self.var = 0

    def fresh(self, prefix: str = "v") -> str:
        self.var += 1
        return f"{prefix}{self.var}"

    def field(self, name: str) -> str:
        """An expression for the failing field's name (``prefix.name``)."""
        return f"prefix + {('.' + name)!r}"

    def fail(self, indent: int, reason: str, name: str, detail: str) -> None:
        self.w.emit(indent, f"raise Invalid({reason!r}, {self.field(name)}, {detail!r})")

    # --- Image helpers, inlined ----------------------------------------------------------

    def value(self, indent: int, target: str, name: str, required: bool) -> None:
        """``img.value``: the raw value; a missing required one stops the event."""
        self.w.emit(indent, f"{target} = get({name!r})")
        if required:
            self.w.emit(indent, f"if {target} is None:")
            self.fail(indent + 1, "missing_field", name, "is missing")

    def string(self, indent: int, target: str, name: str, required: bool) -> None:
        """``img.string``: normalized text, blank optional text as None."""
        emit = self.w.emit
        if self.texts is not None and name in self.texts:
            emit(indent, f"{target} = {self.texts[name]}")
            return
        if self.texts is None:
            emit(indent, f"{target} = texts_get({name!r})")
            emit(indent, f"if {target} is None:")
            indent += 1
        emit(indent, f"{target} = get({name!r})")
        self.normalize(indent, target, name, required)

    def normalize(self, indent: int, target: str, name: str, required: bool) -> None:
        """The rest of ``img.string`` once ``target`` holds the raw value."""
        emit = self.w.emit
        emit(indent, f"if {target} is None:")
        if required:
            self.fail(indent + 1, "missing_field", name, "is missing")
        else:
            emit(indent + 1, "pass")
        emit(indent, f"elif not isinstance({target}, str):")
        self.fail(indent + 1, "invalid_field", name, "expected a string")
        emit(indent, "else:")
        changed = self.fresh("c")
        emit(indent + 1, f"{target}, {changed} = normalize_text({target})")
        emit(indent + 1, f"if not {target}:")
        if required:
            self.fail(indent + 2, "missing_field", name, "empty after trimming")
        else:
            emit(indent + 2, "flags['blank_as_null'] = None")
            emit(indent + 2, f"{target} = None")
        emit(indent + 1, f"elif {changed}:")
        emit(indent + 2, "flags['text_normalized'] = None")

    # --- prechecks -------------------------------------------------------------------------

    def precheck(self, check: Any) -> None:
        names = getattr(check, "text_names", None)
        if names is None or self.texts is None:
            self.w.emit(1, f"{self.w.const(check, 'P')}(img)")
            self.texts = None
            return
        emit = self.w.emit
        for name in names:
            var = self.fresh("t")
            emit(1, f"{var} = get({name!r})")
            emit(1, f"if not isinstance({var}, str):")
            self.fail(2, "invalid_field", name, "expected a string")
            changed = self.fresh("c")
            emit(1, f"{var}, {changed} = normalize_text({var})")
            emit(1, f"if not {var}:")
            self.fail(2, "missing_field", name, "empty after trimming")
            emit(1, f"if {changed}:")
            emit(2, "flags['text_normalized'] = None")
            emit(1, f"texts[{name!r}] = {var}")
            self.texts[name] = var

    # --- rules -----------------------------------------------------------------------------

    def rule(self, rule: Rule) -> None:
        kind = type(rule)
        if kind is Text:
            self.text(rule)  # type: ignore[arg-type]
        elif kind is Enum:
            self.enum(rule)  # type: ignore[arg-type]
        elif kind is Int:
            self.int(rule)  # type: ignore[arg-type]
        elif kind is Unit:
            self.unit(rule)  # type: ignore[arg-type]
        elif kind is Commune:
            self.commune(rule)  # type: ignore[arg-type]
        elif isinstance(rule, Timestamp) and kind.apply is Timestamp.apply:
            self.timestamp(rule)
        elif isinstance(rule, Date) and kind.apply is Date.apply:
            self.date(rule)
        elif isinstance(rule, CitizenId) and kind.apply is CitizenId.apply:
            self.citizen_id(rule)
        else:
            self.w.emit(1, f"{self.w.const(rule.apply, 'A')}(img)")

    def text(self, rule: Text) -> None:
        emit, n = self.w.emit, rule.name
        v = self.fresh()
        self.string(1, v, n, rule.required)
        if rule.case == "person":
            emit(1, f"if {v} is not None and ({v}.isupper() or {v}.islower()):")
            emit(2, f"f = _title({v})")
            emit(2, f"if f != {v}:")
            emit(3, "flags['name_case_normalized'] = None")
            emit(2, f"{v} = f")
        elif rule.case != "keep":
            emit(1, f"if {v} is not None:")
            emit(2, f"f = {v}.{'upper' if rule.case == 'upper' else 'lower'}()")
            emit(2, f"if f != {v}:")
            emit(3, "flags['code_case_normalized'] = None")
            emit(2, f"{v} = f")
        emit(1, f"out[{n!r}] = {v}")

    def enum(self, rule: Enum) -> None:
        emit, n = self.w.emit, rule.name
        v = self.fresh()
        self.value(1, v, n, rule.required and not rule.null_is_invalid)
        symbols = self.w.const(rule.symbols, "S")
        test = f"{v} not in {symbols}"
        emit(1, f"if {test}:" if rule.required else f"if {v} is not None and {test}:")
        self.fail(2, "invalid_field", n, f"expected one of {', '.join(sorted(rule.symbols))}")
        emit(1, f"out[{n!r}] = {v}")

    def int(self, rule: Int) -> None:
        emit, n = self.w.emit, rule.name
        v = self.fresh()
        self.value(1, v, n, rule.required)
        low = max(rule.min, engine._INT_MIN)
        high = min(rule.max, engine._INT_MAX)
        emit(1, f"if {v} is not None:")
        emit(2, f"if not isinstance({v}, int) or isinstance({v}, bool):")
        self.fail(3, "invalid_field", n, "expected an integer")
        emit(2, f"if not ({self.w.const(low)} <= {v} <= {self.w.const(high)}):")
        self.fail(3, rule.reason, n, f"outside {rule.min}..{rule.max}")
        emit(1, f"out[{n!r}] = {v}")

    def unit(self, rule: Unit) -> None:
        emit, n = self.w.emit, rule.name
        v = self.fresh()
        self.string(1, v, n, rule.required)
        emit(1, f"if {v} is not None and ctx.ref.receiving_unit({v}) is None:")
        emit(
            2,
            f"raise Invalid('unknown_receiving_unit', {self.field(n)}, "
            f"f'{{{v}!r}} is not in receiving_units.csv')",
        )
        emit(1, f"out[{n!r}] = {v}")

    def commune(self, rule: Commune) -> None:
        emit, n = self.w.emit, rule.name
        v = self.fresh()
        self.string(1, v, n, rule.required)
        emit(1, f"if {v} is None:")
        emit(2, f"out[{n!r}] = out[{n + '_source'!r}] = None")
        emit(1, "else:")
        emit(2, f"u = {v}")
        emit(2, f"if u.isascii() and u.isdigit() and len(u) < {engine._COMMUNE_CODE_LENGTH}:")
        emit(3, f"u = u.zfill({engine._COMMUNE_CODE_LENGTH})")
        emit(3, "flags['admin_unit_code_zero_padded'] = None")
        emit(2, "u = ctx.ref.resolve_admin_unit(u, img.at)")
        emit(2, "if u is None:")
        emit(
            3,
            f"raise Invalid('unknown_admin_unit', {self.field(n)}, "
            f"f'{{{v}!r}} is not in admin_units_crosswalk.csv')",
        )
        emit(2, "if u.remapped:")
        emit(3, "flags['admin_unit_remapped'] = None")
        emit(2, "if u.outdated:")
        emit(3, "flags['admin_unit_code_outdated'] = None")
        emit(2, f"out[{n!r}] = u.code")
        emit(2, f"out[{n + '_source'!r}] = {v}")

    def timestamp(self, rule: Timestamp) -> None:
        emit, n = self.w.emit, rule.name
        m = self.fresh("m")
        if type(rule).read is Timestamp.read:
            raw = self.fresh()
            self.value(1, raw, n, rule.required)
            emit(1, f"if {raw} is None:")
            emit(2, f"{m} = None")
            emit(1, f"elif isinstance({raw}, datetime):")
            emit(2, f"if {raw}.tzinfo is None:")
            self.fail(3, "invalid_timestamp", n, "a time without a time zone")
            emit(2, f"{m} = {raw}.astimezone(UTC)")
            emit(1, f"elif isinstance({raw}, str):")
            text = self.fresh()
            self.string(2, text, n, rule.required)
            parse = self.w.const(rule.parse, "R")
            emit(2, f"{m} = None if {text} is None else {parse}(img, {text})")
            emit(1, "else:")
            self.fail(2, "invalid_timestamp", n, "expected a time")
        else:
            emit(1, f"{m} = {self.w.const(rule.read, 'R')}(img)")
        emit(1, f"if {m} is None:")
        emit(2, f"out[{n!r}] = None")
        emit(1, "else:")
        if not rule.deadline:
            emit(2, f"if {m} > img.future_limit:")
            emit(3, f"raise {self.w.const(rule.too_far, 'F')}(img, {m})")
        emit(2, f"if {m} < earliest:")
        emit(3, f"raise _too_early({self.field(n)}, earliest)")
        emit(2, f"out[{n!r}] = _to_millis({m})")

    def date(self, rule: Date) -> None:
        emit, n = self.w.emit, rule.name
        d = self.fresh("d")
        if type(rule).read is Date.read:
            raw = self.fresh()
            self.value(1, raw, n, rule.required)
            emit(1, f"if {raw} is None:")
            emit(2, f"{d} = None")
            emit(1, f"elif isinstance({raw}, datetime) or not isinstance({raw}, (date, str)):")
            self.fail(2, "invalid_date", n, "expected a date")
            emit(1, f"elif isinstance({raw}, date):")
            emit(2, f"{d} = {raw}")
            emit(1, "else:")
            text = self.fresh()
            self.string(2, text, n, rule.required)
            parse = self.w.const(rule.parse, "R")
            emit(2, f"{d} = None if {text} is None else {parse}(img, {text})")
        else:
            emit(1, f"{d} = {self.w.const(rule.read, 'R')}(img)")
        emit(1, f"if {d} is None:")
        emit(2, f"out[{n!r}] = None")
        emit(1, "else:")
        if rule.birth:
            emit(2, f"if {d}.year < {engine._OLDEST_BIRTH_YEAR}:")
            self.fail(3, "invalid_date", n, "birth year before 1900")
            emit(2, f"if {d} > img.at_day:")
            self.fail(3, "invalid_date", n, f"birth date after {rule.event_name}")
        else:
            emit(2, f"if {d} < img.earliest_day:")
            emit(3, f"raise _too_early({self.field(n)}, earliest)")
            if rule.future != "allow":
                emit(2, f"if {d} > img.future_limit_day:")
                if rule.future == "reject":
                    emit(
                        3,
                        f"raise Invalid('far_future_timestamp', {self.field(n)}, "
                        "f'more than 1 day after {now.date()}')",
                    )
                else:
                    emit(3, "flags['future_date'] = None")
        emit(2, f"out[{n!r}] = {d}")

    def citizen_id(self, rule: CitizenId) -> None:
        emit, n = self.w.emit, rule.name
        v = self.fresh()
        if type(rule).read is CitizenId.read:
            self.value(1, v, n, rule.required)
        else:
            emit(1, f"{v} = {self.w.const(rule.read, 'R')}(img)")
        emit(1, f"if {v} is None:")
        emit(2, f"out[{n!r}] = None")
        emit(1, "else:")
        birth = f"out.get({rule.birth_date!r})" if rule.birth_date else "None"
        sex = f"out.get({rule.sex!r})" if rule.sex else "None"
        emit(2, f"b = {birth}")
        emit(2, f"x = {sex}")
        emit(
            2,
            f"k = check_citizen_id({v}, ctx.ref.cccd_province_codes, "
            "birth_date=b if isinstance(b, date) else None, "
            "sex=x if isinstance(x, str) else None, today=img.at_day)",
        )
        emit(2, "if isinstance(k, CitizenIdRejection):")
        emit(3, f"raise Invalid(k.reason, {self.field(n)}, k.detail)")
        emit(2, "for f in k.flags:")
        emit(3, "flags[f] = None")
        emit(2, f"out[{n!r}] = k.value")

    # --- the function ----------------------------------------------------------------------

    def build(self) -> ImageFunction:
        rules, w = self.rules, self.w
        event_time = w.const(rules.event_time, "E")
        blank = w.const(rules.blank, "B")
        w.emit(0, "def image(raw, prefix, ctx, now, changed_at, earliest):")
        w.emit(1, "if not (type(raw) is dict or isinstance(raw, Mapping)):")
        w.emit(2, "raise Invalid('invalid_field', prefix, 'expected a record')")
        w.emit(
            1,
            f"img = Image(raw, prefix, ctx, now, changed_at, {event_time}, earliest, {blank})",
        )
        w.emit(1, "get = raw.get")
        w.emit(1, "out = img.out")
        w.emit(1, "flags = img.flags")
        w.emit(1, "texts = img.texts")
        w.emit(1, "texts_get = texts.get")
        for check in rules.prechecks:
            self.precheck(check)
        for rule in rules.rules:
            self.rule(rule)
        for check in rules.checks:
            w.emit(1, f"{w.const(check, 'C')}(img)")
        w.emit(1, "out['quality_flags'] = list(flags)")
        w.emit(1, "return out")
        source = "\n".join(w.lines) + "\n"
        scope: dict[str, Any] = {
            "CitizenIdRejection": CitizenIdRejection,
            "Image": Image,
            "Invalid": Invalid,
            "Mapping": Mapping,
            "UTC": UTC,
            "_title": engine._title,
            "_to_millis": engine._to_millis,
            "_too_early": engine._too_early,
            "check_citizen_id": check_citizen_id,
            "date": date,
            "datetime": datetime,
            "normalize_text": normalize_text,
            **w.consts,
        }
        exec(compile(source, f"<standardizer {rules.dataset_id}>", "exec"), scope)
        function = scope["image"]
        function.__std_source__ = source
        return function  # type: ignore[no-any-return]


class CompiledRules:
    """A dataset's declaration with its image function generated once."""

    __slots__ = ("image", "rules")

    def __init__(self, rules: DatasetRules) -> None:
        self.rules = rules
        self.image: ImageFunction = _Compiler(rules).build()

    def run(
        self,
        raw: Mapping[str, Any],
        ctx: Context,
        now: datetime | None,
        *,
        earliest: date,
        key_fields: Sequence[str] = (),
    ) -> Standardized | Rejected:
        """``engine.run(self.rules, ...)``, compiled: the same result for any input."""
        return run_with(self.rules, self.image, raw, ctx, now, earliest, key_fields)


def compile_rules(rules: DatasetRules) -> CompiledRules:
    """``rules`` compiled into generated Python (see the module's doc)."""
    return CompiledRules(rules)
