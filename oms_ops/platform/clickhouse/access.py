"""Who may run what on the embedded server: authentication, and the checks made before chdb sees a query.

Why: chdb is ClickHouse *local*: it has no users and no grants, and it runs as the OMS's system user with
every file, network and process the OMS can reach. A real ClickHouse server keeps its users away from the
host through ``user_files_path`` and grants on table functions; here the HTTP server must refuse that
itself, before handing a statement to chdb. The checks:

* **Authentication** (:meth:`AccessControl.authenticate`) as ClickHouse's HTTP interface takes it: HTTP basic
  auth, the ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, or ``user``/``password`` URL parameters. No
  credentials means user ``default`` with an empty password, which never exists here. Failure: code 516
  ``AUTHENTICATION_FAILED``, HTTP 401.
* **For everyone** (:meth:`AccessControl.check_statement`): no table function that reaches outside the data
  directory (``file``, ``url``, ``remote``, ``remoteSecure``, ``postgresql``, ``mysql``, ``s3``, ``hdfs``,
  ``input``, ``executable``, … — every table function except a short list of generators, and the scalar
  ``file()``), no table or database engine other than MergeTree, Log, Memory and their kin, no dictionaries
  (their sources open files, URLs and other servers), no ``INTO OUTFILE`` / ``FROM INFILE``, no ``SYSTEM``,
  ``KILL``, ``BACKUP`` or ``RESTORE``, and no setting that names a file or makes chdb parse SQL or evaluate
  expressions hidden in data (:data:`DENIED_SETTING_PARTS`). Code 497 ``ACCESS_DENIED``, HTTP 403.
* **Per role** (:meth:`AccessControl.check_role`): a ``reader`` runs read-only statements (its handles also
  carry ``readonly=2``, so chdb itself refuses writes); a ``writer`` writes only into its databases, judged
  by chdb's own parser (``classify_query``'s ``writes_only_target_database``, unqualified names resolved
  through the current database).

How the statement check cannot be dodged: a statement is first scanned as raw text. A backslash (the only
way to spell a quoted identifier with other characters than its name's) or any word of the deny lists
anywhere — in strings and comments too — sends it to the exact check: chdb's own formatter
(``formatQuerySingleLine``) rewrites the statement in canonical form (comments dropped, escapes decoded,
heredocs turned into plain strings, keywords upper-case), and that text is tokenized. So comments, case,
quoting and escapes cannot hide a function name from the check, and a statement chdb cannot parse is
refused with chdb's syntax error. Verdicts of the exact check are cached by statement text.

Limits (written down so nobody relies on more): the ``writer`` may *read* every database; a materialized
view's ``TO`` table is not judged by ``classify_query`` (a writer could point one at another database); a
column or table named like a blocked function and followed by ``(`` (``INSERT INTO url (…)``) is refused
too; expression evaluation in ``Values`` data is switched off for every handle
(``input_format_values_interpret_expressions=0``), so ``VALUES (now())`` must be written as literals.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Iterable, Mapping

from oms_ops.platform.clickhouse.protocol import ERR_READONLY, ClickHouseError
from oms_ops.platform.clickhouse.sql import first_keyword, tokens
from oms_ops.platform.clickhouse.users import StoredUser

ERR_AUTHENTICATION_FAILED = (516, "AUTHENTICATION_FAILED")
ERR_ACCESS_DENIED = (497, "ACCESS_DENIED")

#: table functions that only generate or reshape data given in the query itself (everything else is refused)
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "primes",
        "generaterandom",
        "generateseries",
        "generate_series",
        "values",
        "sqlstandardvalues",
        "view",
        "null",
        # parses the string it is given; with Values' expression evaluation off (every handle) nothing runs
        "format",
    }
)
#: refused even if this chdb does not list them as table functions (the scalar ``file()`` reads a file too;
#: ``disk()`` puts a table's data anywhere; ``python()`` reads the server process's memory)
BLOCKED_FUNCTIONS = frozenset(
    {
        "file",
        "url",
        "remote",
        "remotesecure",
        "postgresql",
        "mysql",
        "s3",
        "hdfs",
        "input",
        "executable",
        "executablepool",
        "disk",
        "python",
        "cluster",
        "clusterallreplicas",
        "dictionary",
        "merge",
        "jdbc",
        "odbc",
        "sqlite",
        "mongodb",
        "redis",
        "filesystem",
    }
)
#: table and database engines that keep data in the data directory (or nowhere); every other is refused
SAFE_ENGINES = frozenset(
    {
        "log",
        "tinylog",
        "stripelog",
        "memory",
        "null",
        "set",
        "join",
        "view",
        "materializedview",
        "generaterandom",
        "atomic",
        "ordinary",
        "lazy",
        "replicated",
    }
)
#: settings (by part of their name) that name files or URLs, or make chdb parse SQL or evaluate expressions
#: carried in data or in a string: format schemas and templates, Avro schema registries, query-level
#: filters, Values' expression evaluation, default engines (a CREATE without ENGINE) and other dialects
DENIED_SETTING_PARTS = (
    "format_schema",
    "format_template",
    "schema_registry",
    "additional_table_filters",
    "additional_result_filter",
    "values_interpret_expressions",
    "values_deduce_templates",
    "default_table_engine",
    "default_temporary_table_engine",
    "default_database_engine",
    "dialect",
    "user_files",
)
#: statements nobody runs on this server: they act on the server process or write outside the data directory
DENIED_STATEMENTS = frozenset({"SYSTEM", "KILL", "BACKUP", "RESTORE"})
#: settings every handle is opened with (chdb applies connection-string parameters to the handle)
HANDLE_SETTINGS = {
    "input_format_values_interpret_expressions": "0",
    "input_format_values_deduce_templates_of_expressions": "0",
}
READER_SETTINGS = {**HANDLE_SETTINGS, "readonly": "2"}

_ENGINE_RE = re.compile(r"\bENGINE\s*=\s*`?([A-Za-z_][A-Za-z0-9_]*)")
_CACHE_SIZE = 4096
#: query classes of chdb's classify_query
READ_ONLY, MUTATING, MUTATING_GLOBAL, CONTROL, UNKNOWN = range(5)


def _denied_setting(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in DENIED_SETTING_PARTS)


def _auth_error(user: str) -> ClickHouseError:
    return ClickHouseError.of(
        ERR_AUTHENTICATION_FAILED,
        f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
    )


def _denied(user: StoredUser, what: str) -> ClickHouseError:
    return ClickHouseError.of(ERR_ACCESS_DENIED, f"{user.name}: Not enough privileges: {what}")


class AccessControl:
    """The server's users and the checks made before a statement reaches chdb.

    ``table_functions`` / ``engines``: what this chdb offers (``system.table_functions``,
    ``system.table_engines``, ``system.database_engines``): every one of them not known to be safe is refused.
    """

    def __init__(
        self,
        users: Mapping[str, StoredUser],
        *,
        table_functions: Iterable[str] = (),
        engines: Iterable[str] = (),
    ) -> None:
        self.users = dict(users)
        self.blocked_functions = frozenset(
            BLOCKED_FUNCTIONS | {f.lower() for f in table_functions} - SAFE_TABLE_FUNCTIONS
        )
        self.engines = frozenset(e.lower() for e in engines)
        # any of these anywhere in a statement's text sends it to the exact (canonical) check
        self._triggers = tuple(
            sorted(
                self.blocked_functions
                | self.engines - SAFE_ENGINES
                | {"outfile", "infile", "dictionary", "engine", *(s.lower() for s in DENIED_STATEMENTS)}
                | set(DENIED_SETTING_PARTS)
            )
        )
        self._verdicts: dict[str, ClickHouseError | None] = {}
        self._lock = threading.Lock()

    # -- authentication ------------------------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str], params: Mapping[str, str]) -> StoredUser:
        """The user named by the request's credentials, or ClickHouseError 516."""
        name, password = "default", ""
        authorization = headers.get("Authorization") or ""
        if authorization[:6].lower() == "basic ":
            try:
                name, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise _auth_error("default") from None
        elif headers.get("X-ClickHouse-User") is not None:
            name, password = headers.get("X-ClickHouse-User") or "", headers.get("X-ClickHouse-Key") or ""
        elif "user" in params or "password" in params:
            name, password = params.get("user") or "default", params.get("password") or ""
        user = self.users.get(name)
        if user is None or not user.check_password(password):
            raise _auth_error(name or "default")
        return user

    # -- checks --------------------------------------------------------------------------------------------

    def check_settings(self, user: StoredUser, settings: Iterable[str]) -> None:
        """Settings passed as URL parameters: none of :data:`DENIED_SETTING_PARTS`."""
        for name in settings:
            if _denied_setting(name):
                raise _denied(user, f"setting {name} cannot be changed on this server")

    def check_statement(self, user: StoredUser, sql: str, canonical: Callable[[str], str]) -> None:
        """The checks every user is subject to (see the module's docstring). ``canonical(sql)`` returns chdb's
        canonical formatting of the statement, or raises ClickHouseError when chdb cannot parse it."""
        lowered = sql.lower()
        if "\\" not in lowered and not any(t in lowered for t in self._triggers):
            return  # nothing the exact check looks for can appear in the canonical text
        with self._lock:
            cached = self._verdicts.get(sql, False)
        if cached is False:
            try:
                problem = self._canonical_problem(canonical(sql))
                verdict = None if problem is None else ClickHouseError.of(ERR_ACCESS_DENIED, problem)
            except ClickHouseError as err:
                verdict = err
            with self._lock:
                if len(self._verdicts) >= _CACHE_SIZE:
                    self._verdicts.clear()
                self._verdicts[sql] = verdict
            cached = verdict
        if cached is not None:
            if cached.code == ERR_ACCESS_DENIED[0]:
                raise _denied(user, cached.message)
            raise cached

    def _canonical_problem(self, text: str) -> str | None:
        """What is refused in a statement in chdb's canonical form, or None."""
        first = first_keyword(text)
        if first in DENIED_STATEMENTS:
            return f"{first} statements are not allowed on this server"
        toks = list(tokens(text))
        creates = first in ("CREATE", "ATTACH", "REPLACE")
        for i, tok in enumerate(toks):
            word = text[tok.start : tok.end]
            if tok.kind == "quoted":
                if word[0] not in '`"':
                    continue  # a string literal
                word = word[1:-1]
            elif tok.kind != "word":
                continue
            lowered = word.lower()
            if lowered in ("outfile", "infile"):
                return f"INTO OUTFILE / FROM INFILE ({word}) are not allowed on this server"
            if creates and word == "DICTIONARY":
                return "dictionaries are not allowed on this server (their sources reach outside it)"
            if _denied_setting(lowered):
                return f"setting {word} cannot be changed on this server"
            following = toks[i + 1] if i + 1 < len(toks) else None
            if (
                lowered in self.blocked_functions
                and following is not None
                and following.kind == "open"
                and text[following.start] == "("
            ):
                return f"function {word}() is not allowed on this server (it reaches outside the server)"
        for match in _ENGINE_RE.finditer(text):
            engine = match.group(1).lower()
            if engine not in SAFE_ENGINES and not engine.endswith("mergetree"):
                return (
                    f"engine {match.group(1)} is not allowed on this server (it reaches outside the server)"
                )
        return None

    def check_role(
        self,
        user: StoredUser,
        sql: str,
        classify: Callable[[str, str], tuple[int, bool]],
        canonical: Callable[[str], str],
        *,
        insert: bool = False,
    ) -> None:
        """What the user's role allows. ``classify(sql, database)`` is chdb's (query class, whether the
        statement writes only into ``database``); ``canonical`` as for :meth:`check_statement`."""
        if user.role == "admin":
            return
        keyword = first_keyword(sql)
        if user.role == "reader":
            if insert:
                raise _readonly(user)
            query_class, _ = classify(sql, "")
            if query_class in (READ_ONLY, UNKNOWN) or (query_class == CONTROL and keyword in ("SET", "USE")):
                return
            raise _readonly(user)
        query_class, _ = classify(sql, "")
        if query_class == UNKNOWN:
            # chdb's error for what it cannot parse; what it parses only with this handle's settings (a
            # raised max_query_size) cannot be judged, so it is refused
            canonical(sql)
            raise _denied(user, "the statement could not be classified")
        if query_class == READ_ONLY or (query_class == CONTROL and keyword in ("SET", "USE")):
            return
        if query_class == MUTATING and any(classify(sql, db)[1] for db in user.databases):
            return
        allowed = ", ".join(user.databases) or "no database"
        raise _denied(user, f"this user may write only into {allowed}")


def _readonly(user: StoredUser) -> ClickHouseError:
    return ClickHouseError.of(
        ERR_READONLY, f"{user.name}: Cannot execute query in readonly mode: this user may only read"
    )
