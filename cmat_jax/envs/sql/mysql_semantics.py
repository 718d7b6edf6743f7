"""MySQL semantics on SQLite: rewrites of a parsed MySQL statement's tree, so that SQLite computes what MySQL
would (dialect.to_sqlite applies them, all columns being TEXT as in DBBench).

sqlglot translates syntax; these rewrites carry over the semantics SQLite lacks:

- a text value meeting a number (comparison, IN, BETWEEN, arithmetic, SUM/AVG)
  is read as a double first, as MySQL does ('5' < 17 is true, '5' + 1 is 6.0),
  while numbers (from CTEs, COUNT, ...) stay numbers;
- text comparisons and ORDER BY use the MySQL collation even on expressions
  (SQLite would fall back to binary comparison there);
- LIKE ignores case and accents, with backslash as the default escape;
- MySQL string functions SQLite lacks (LEFT, LPAD, SUBSTRING_INDEX, CONCAT_WS, ...)
  call the equivalents in mysql_functions;
- numbers stored into TEXT columns become the text MySQL would store
  (7.400 -> '7.400', a DOUBLE 6 -> '6');
- sort terms become sort keys SQLite compares in C (see Sorting below), and a
  compound's ORDER BY moves outside it (`sort_compounds_outside`).

`rewrite(node)` rewrites one node in place; call it on every node of a private copy.
"""

from __future__ import annotations

from sqlglot import exp

from cmat_jax.envs.sql import mysql_text


_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv)
_NUMERIC_FUNCTIONS = (
    exp.Count, exp.Sum, exp.Avg, exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Length, exp.Sqrt,
    exp.Pow, exp.Ln, exp.Log, exp.Exp, exp.Sign, exp.Stddev, exp.StddevPop, exp.StddevSamp,
    exp.Variance, exp.VariancePop,
)  # fmt: skip


def _is_numeric(node: exp.Expression | None) -> bool:
    """Whether MySQL types the expression as a number (conservative: unknown means text)."""
    if isinstance(node, exp.Paren):
        return _is_numeric(node.this)
    if isinstance(node, exp.Literal):
        return not node.is_string
    if isinstance(node, (exp.Boolean, *_ARITHMETIC, *_NUMERIC_FUNCTIONS)):
        return True
    if isinstance(node, (exp.Neg, exp.Max, exp.Min)):
        return _is_numeric(node.this)
    if isinstance(node, exp.Cast):
        return node.to.is_type(*exp.DataType.NUMERIC_TYPES)
    if isinstance(node, exp.Anonymous):
        return node.name.lower() == mysql_text.NUMBER_FUNCTION
    if isinstance(node, exp.Subquery):
        return _is_numeric(node.this)
    if isinstance(node, exp.Select) and node.expressions:
        return _is_numeric(node.expressions[0].unalias())
    return False


def _replace_at(parent: exp.Expression, key: str, index: int | None, new: exp.Expression) -> None:
    if index is None:
        parent.set(key, new)
        return
    parent.args[key][index] = new
    new.parent, new.arg_key, new.index = parent, key, index
    while parent is not None and parent._hash is not None:  # as Expression.set: cached hashes are stale
        parent._hash = None
        parent = parent.parent


def _replace(node: exp.Expression, new: exp.Expression) -> None:
    """node.replace(new) in constant time. sqlglot re-parents a whole argument list on each replacement
    of one of its items: rewriting the 6,000 terms of a 20,000-character GROUP BY took 4.7 s."""
    parent, key, index = node.parent, node.arg_key, node.index
    if parent is None:
        return
    _replace_at(parent, key, index, new)
    if new is not node:
        node.parent = node.arg_key = node.index = None


def _wrap(node: exp.Expression, make) -> None:
    """Replaces `node` in its parent by make(node)."""
    parent, key, index = node.parent, node.arg_key, node.index
    wrapper = make(node)
    if parent is not None:
        _replace_at(parent, key, index, wrapper)


def _as_number(node: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=mysql_text.NUMBER_FUNCTION, expressions=[node])


def _collated(node: exp.Expression) -> exp.Expression:
    return exp.Collate(this=exp.Paren(this=node), expression=exp.to_identifier(mysql_text.COLLATION))


def _call(name: str):
    return lambda node: exp.Anonymous(this=name, expressions=[node])


def _to_number_if_text(node: exp.Expression | None) -> None:
    if node is not None and not isinstance(node, exp.Null) and not _is_numeric(node):
        _wrap(node, _as_number)


def _rewrite_comparison(node: exp.Expression) -> None:
    left, right = node.this, node.expression
    left_numeric, right_numeric = _is_numeric(left), _is_numeric(right)
    if isinstance(left, exp.Collate) or isinstance(right, exp.Collate):
        return  # the SQL names its collation
    if left_numeric and not right_numeric:
        _to_number_if_text(right)
    elif right_numeric and not left_numeric:
        _to_number_if_text(left)
    elif not left_numeric and left is not None:
        _wrap(left, _collated)


def _rewrite_membership(node: exp.Expression, others: list) -> None:
    """IN and BETWEEN: numbers on the right make MySQL compare as doubles, text compares collated."""
    subject = node.this
    if subject is None or _is_numeric(subject) or not others:
        return
    if all(_is_numeric(other) for other in others):
        _to_number_if_text(subject)
    else:
        _wrap(subject, _collated)


def _rewrite_stored_value(value: exp.Expression) -> None:
    """A value written to a TEXT column becomes the text MySQL would store."""
    if isinstance(value, exp.Literal) and not value.is_string:
        _replace(value, exp.Literal.string(mysql_text.number_literal_text(value.this)))
    elif isinstance(value, exp.Neg) and isinstance(value.this, exp.Literal) and not value.this.is_string:
        _replace(value, exp.Literal.string(mysql_text.number_literal_text(value.this.this, negative=True)))
    elif _is_numeric(value):
        _wrap(value, _call(mysql_text.TEXT_FUNCTION))


def _mysql_function_call(node: exp.Expression) -> exp.Expression | None:
    """MySQL string functions SQLite lacks, as calls of the functions in mysql_functions."""
    if isinstance(node, exp.Left):
        name, args = "mysql_left", [node.this, node.expression]
    elif isinstance(node, exp.Right):
        name, args = "mysql_right", [node.this, node.expression]
    elif isinstance(node, exp.Pad):
        fill = node.args.get("fill_pattern") or exp.Literal.string(" ")
        name, args = ("mysql_lpad" if node.args.get("is_left") else "mysql_rpad"), [node.this, node.expression, fill]
    elif isinstance(node, exp.Repeat):
        name, args = "mysql_repeat", [node.this, node.args.get("times")]
    elif isinstance(node, exp.Space):
        name, args = "mysql_repeat", [exp.Literal.string(" "), node.this]
    elif isinstance(node, exp.SubstringIndex):
        name, args = "mysql_substring_index", [node.this, node.args.get("delimiter"), node.args.get("count")]
    elif isinstance(node, exp.ConcatWs):
        name, args = "mysql_concat_ws", list(node.expressions)
    else:
        return None
    if any(arg is None for arg in args):
        return None
    return exp.Anonymous(this=name, expressions=args)


def _collation_of(node: exp.Collate) -> str:
    """A collation written in the SQL: MySQL's binary and case-sensitive ones compare as SQLite's BINARY."""
    name = node.expression.name.lower() if node.expression is not None else ""
    return "BINARY" if name.endswith(("_bin", "_cs")) or name == "binary" else mysql_text.COLLATION


def _is_assignment(node: exp.Expression) -> bool:
    """`col = value` in UPDATE ... SET or ON DUPLICATE KEY UPDATE: an assignment, not a comparison."""
    return isinstance(node.parent, (exp.Update, exp.OnConflict)) and node.arg_key == "expressions"


# Sorting. SQLite sorts an ORDER BY, GROUP BY or PARTITION BY without LIMIT inside one VM
# instruction that no interrupt reaches; with the collation a Python callback, sorting N rows takes
# ~N log N callbacks (46 s for 76 long rows, and after a deadline still ~0.1 us each). So sort terms
# become mysql_sort_key(term), whose binary order is the collation's: one Python call per row, made
# while rows are produced (interruptible), and the sort itself compares in C, in the same order,
# ties included. Numbers stay numbers, so every term gets the key (a CAST keeps its operand's
# collation in SQLite). Terms SQLite must see as they are (an ordinal naming a column of SELECT *)
# get LIMIT -1, no limit: SQLite then orders through a b-tree, one row per instruction.
_NO_LIMIT = exp.Limit(expression=exp.Literal.number(-1))
_COMPOUND_ALIAS = "_compound"


def _sort_key(node: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=mysql_text.SORT_KEY_FUNCTION, expressions=[node])


def _is_ordinal(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string


def _projection(select: exp.Expression | None, ordinal: exp.Expression) -> exp.Expression | None:
    """The select-list expression a `GROUP BY 2` / `ORDER BY 2` names, unaliased; None when unknown."""
    if not isinstance(select, exp.Select) or not _is_ordinal(ordinal):
        return None
    try:
        index = int(ordinal.this) - 1
    except ValueError:
        return None
    is_star = [isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
               for e in select.expressions]
    if not 0 <= index < len(select.expressions) or any(is_star[: index + 1]):
        return None  # a star before it: its columns are not known here
    projection = select.expressions[index].unalias()
    if projection.find(exp.Rand) is not None:
        return None  # a copy would draw other numbers than the column shows
    return projection


def _sort_by_key(term: exp.Expression, select: exp.Expression | None, order_by: bool = False) -> None:
    """Replaces a GROUP BY / ORDER BY / PARTITION BY term by the key SQLite should sort by."""
    projection = _projection(select, term)
    if projection is not None:
        _replace(term, _sort_key(projection.copy()))
    elif _is_ordinal(term):
        if order_by and isinstance(select, exp.Select) and not select.args.get("limit"):
            select.set("limit", _NO_LIMIT.copy())
    elif isinstance(term, exp.Collate):
        if _collation_of(term) != "BINARY":
            _replace(term, _sort_key(term.this))
    elif not isinstance(term, (exp.Literal, exp.Null)):
        _wrap(term, _sort_key)


def sort_compounds_outside(tree: exp.Expression) -> exp.Expression:
    """`a UNION b ORDER BY x LIMIT n` -> `SELECT * FROM (a UNION b) ORDER BY x LIMIT n`: SQLite would sort
    each arm of a compound by the collation; outside, the terms can take keys. Returns the new root."""
    for compound in list(tree.find_all(exp.SetOperation)):
        order = compound.args.get("order")
        if order is None:
            continue
        clauses = {key: compound.args.get(key) for key in ("order", "limit", "offset")}
        inner = compound.copy()
        for key in clauses:
            inner.set(key, None)
        for column in order.find_all(exp.Column):  # a global ORDER BY names output columns only
            column.set("table", None)
        wrapper = exp.select("*").from_(exp.Subquery(this=inner, alias=exp.TableAlias(
            this=exp.to_identifier(_COMPOUND_ALIAS))))
        for key, clause in clauses.items():
            wrapper.set(key, clause)
        if compound is tree:
            tree = wrapper
        else:
            compound.replace(wrapper)
    return tree


def rewrite(node: exp.Expression) -> None:
    call = _mysql_function_call(node)
    if call is not None:
        _replace(node, call)
    elif isinstance(node, exp.Collate):
        node.set("expression", exp.to_identifier(_collation_of(node)))
    elif isinstance(node, _COMPARISONS):
        if not _is_assignment(node):
            _rewrite_comparison(node)
    elif isinstance(node, exp.In):
        query = node.args.get("query")
        _rewrite_membership(node, [query] if query is not None else list(node.expressions))
    elif isinstance(node, exp.Between):
        _rewrite_membership(node, [node.args.get("low"), node.args.get("high")])
    elif isinstance(node, _ARITHMETIC):
        _to_number_if_text(node.this)
        _to_number_if_text(node.expression)
    elif isinstance(node, exp.Neg):
        _to_number_if_text(node.this)
    elif isinstance(node, (exp.Sum, exp.Avg)):
        argument = node.this
        for term in list(argument.expressions) if isinstance(argument, exp.Distinct) else [argument]:
            _to_number_if_text(term)
    elif isinstance(node, exp.Like):
        _wrap(node.this, _call(mysql_text.FOLD_FUNCTION))
        _wrap(node.expression, _call(mysql_text.FOLD_FUNCTION))
        if not isinstance(node.parent, exp.Escape):
            _wrap(node, lambda like: exp.Escape(this=like, expression=exp.Literal.string("\\")))
    elif isinstance(node, exp.Ordered):
        owner = node.parent.parent if isinstance(node.parent, exp.Order) else None
        _sort_by_key(node.this, owner, order_by=True)
    elif isinstance(node, exp.Group):
        for term in list(node.expressions):
            _sort_by_key(term, node.parent)
    elif isinstance(node, exp.Window):
        for term in list(node.args.get("partition_by") or []):
            _sort_by_key(term, None)
    elif isinstance(node, exp.Insert) and isinstance(node.expression, exp.Values):
        for row in node.expression.expressions:
            for value in list(row.expressions) if isinstance(row, exp.Tuple) else [row]:
                _rewrite_stored_value(value)
    elif isinstance(node, exp.Update):
        target = node.this
        # MySQL accepts `SET t.col = ...` (t the table or its alias); SQLite only a bare column.
        own_names = {target.name.lower(), target.alias_or_name.lower()} if isinstance(target, exp.Table) else set()
        for assignment in node.expressions:
            if not isinstance(assignment, exp.EQ):
                continue
            column = assignment.this
            if isinstance(column, exp.Column) and column.table and column.table.lower() in own_names:
                column.set("table", None)
                column.set("db", None)
            if assignment.expression is not None:
                _rewrite_stored_value(assignment.expression)
