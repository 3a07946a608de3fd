"""SCIM filters (RFC 7644 §3.4.2.2): every example of the RFC parses, precedence and
grouping are right, comparisons follow the RFC's rules, and what is not a filter is
``invalidFilter`` naming where it stopped. PATCH paths (§3.5.2) likewise."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_share.scim.filters import (
    And,
    AttrPath,
    Compare,
    Not,
    Or,
    PatchPath,
    Present,
    ValuePath,
    equality_template,
    matches,
    parse_attribute,
    parse_filter,
    parse_path,
    required_equality,
)
from mlflow_share.scim.protocol import ENTERPRISE_USER_SCHEMA, InvalidFilter, InvalidPath

# The filter examples of RFC 7644 §3.4.2.2, verbatim.
RFC_EXAMPLES = [
    'userName Eq "john"',
    'userName eq "bjensen"',
    'name.familyName co "O\'Malley"',
    'userName sw "J"',
    'urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"',
    'title pr',
    'meta.lastModified gt "2011-05-13T04:42:34Z"',
    'meta.lastModified ge "2011-05-13T04:42:34Z"',
    'meta.lastModified lt "2011-05-13T04:42:34Z"',
    'meta.lastModified le "2011-05-13T04:42:34Z"',
    'title pr and userType eq "Employee"',
    'title pr or userType eq "Intern"',
    'schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"',
    'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")',
    'userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")',
    'userType eq "Employee" and (emails.type eq "work")',
    'userType eq "Employee" and emails[type eq "work" and value co "@example.com"]',
    'emails[type eq "work" and value co "@example.com"] or '
    'ims[type eq "xmpp" and value co "@foo.com"]',
]


def _path(name: str, sub: str | None = None, schema: str | None = None) -> AttrPath:
    return AttrPath(schema, name, sub)


@pytest.mark.parametrize("text", RFC_EXAMPLES)
def test_every_rfc_example_parses(text: str) -> None:
    parse_filter(text)


def test_the_tree_of_simple_filters() -> None:
    assert parse_filter('userName eq "bjensen"') == Compare(_path("userName"), "eq", "bjensen")
    assert parse_filter("title pr") == Present(_path("title"))
    assert parse_filter('name.familyName co "O\'Malley"') == Compare(
        _path("name", "familyName"), "co", "O'Malley")
    assert parse_filter('urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"') == Compare(
        _path("userName", schema="urn:ietf:params:scim:schemas:core:2.0:User"), "sw", "J")
    extension = f"{ENTERPRISE_USER_SCHEMA}:manager.value"
    assert parse_filter(f'{extension} eq "26118915-6090-4610-87e4-49d8ca9f808d"') == Compare(
        _path("manager", "value", ENTERPRISE_USER_SCHEMA), "eq",
        "26118915-6090-4610-87e4-49d8ca9f808d")


def test_operators_and_literals_in_any_case_and_json_values() -> None:
    assert parse_filter('userName EQ "a"') == Compare(_path("userName"), "eq", "a")
    assert parse_filter("title PR") == Present(_path("title"))
    assert parse_filter("active eq TRUE") == Compare(_path("active"), "eq", True)
    assert parse_filter("x eq null") == Compare(_path("x"), "eq", None)
    assert parse_filter("x gt -1.5e2") == Compare(_path("x"), "gt", -150.0)
    assert parse_filter("x ge 10") == Compare(_path("x"), "ge", 10)
    assert parse_filter(r'x eq "a \"quoted\" \\ \u00e9"') == Compare(
        _path("x"), "eq", 'a "quoted" \\ é')
    assert parse_filter('a eq "x"  AND   b eq "y"') == And(Compare(_path("a"), "eq", "x"),
                                                       Compare(_path("b"), "eq", "y"))


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    a, b, c = (Present(_path(n)) for n in "abc")
    assert parse_filter("a pr or b pr and c pr") == Or(a, And(b, c))
    assert parse_filter("a pr and b pr or c pr") == Or(And(a, b), c)
    assert parse_filter("(a pr or b pr) and c pr") == And(Or(a, b), c)
    assert parse_filter("a pr or b pr or c pr") == Or(Or(a, b), c)
    assert parse_filter("not (a pr) and b pr") == And(Not(a), b)
    assert parse_filter("not(a pr or b pr)") == Not(Or(a, b))
    assert parse_filter("((a pr))") == a


def test_value_filters() -> None:
    assert parse_filter('emails[type eq "work" and value co "@example.com"]') == ValuePath(
        _path("emails"), And(Compare(_path("type"), "eq", "work"),
                             Compare(_path("value"), "co", "@example.com")))
    assert parse_filter('members[value eq "2819c223"]') == ValuePath(
        _path("members"), Compare(_path("value"), "eq", "2819c223"))


@pytest.mark.parametrize("text, where", [
    ('userName eq', "at its end"),
    ('userName xx "a"', "position 10"),
    ('userName eq "a', "Unterminated string at position 13"),
    ('(userName eq "a"', "expected ')'"),
    ('userName eq "a")', "unexpected ')' at position 16"),
    ('userName eq "a" and', "at its end"),
    ('userName eq "a" or or b pr', "found 'b' at position 23"),  # "or" may name an attribute
    ('userName eq "a" b eq "c"', "unexpected 'b' at position 17"),
    ('userName eq bjensen', "expected a value"),
    ('userName eq \'bjensen\'', "expected a value"),
    ('a[b[c eq 1]]', "a value filter here is not allowed"),
    ('emails.value[type eq "work"]', "a value filter here is not allowed"),
    ('emails[type eq "work"', "expected ']'"),
    ('x gt true', "'gt' compares with a string, number or date"),
    ('x lt null', "'lt' compares with"),
    ('x co 3', "'co' compares with a string"),
    ('x sw true', "'sw' compares with a string"),
    ('1abc eq "x"', "is not an attribute path"),
    ('a.b.c eq "x"', "is not an attribute path"),
    ('http://x:y eq "x"', "is not an attribute path"),
    ('eq "x"', "expected an operator"),
    ('"x" eq "x"', "expected an attribute"),
    ('not a pr', "expected an operator"),
    ('x eq 01', "expected a value"),
])
def test_what_is_not_a_filter_is_invalid_filter(text: str, where: str) -> None:
    with pytest.raises(InvalidFilter) as raised:
        parse_filter(text)
    assert where in raised.value.message
    assert raised.value.get_http_status_code() == 400
    assert raised.value.scim_type == "invalidFilter"


def test_empty_long_and_deep_filters_are_refused() -> None:
    for text in ("", "   "):
        with pytest.raises(InvalidFilter, match="empty"):
            parse_filter(text)
    with pytest.raises(InvalidFilter, match="longer than"):
        parse_filter('userName eq "' + "a" * 5000 + '"')
    with pytest.raises(InvalidFilter, match="levels of nesting"):
        parse_filter("(" * 40 + "a pr" + ")" * 40)
    parse_filter("(" * 20 + "a pr" + ")" * 20)


USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_SCHEMA],
    "id": "2819c223-7f76-453a-919d-413861904646",
    "externalId": "BJ-1",
    "userName": "bjensen@example.com",
    "name": {"familyName": "Jensen", "givenName": "Barbara"},
    "userType": "Employee",
    "title": "",
    "active": True,
    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True},
               {"value": "babs@jensen.org", "type": "home"}],
    ENTERPRISE_USER_SCHEMA: {"employeeNumber": "701984", "manager": {"value": "26118915"}},
    "meta": {"created": "2010-01-23T04:56:22Z", "lastModified": "2011-05-13T04:42:34Z",
             "version": 'W/"3694e05e9dff591"'},
}


@pytest.mark.parametrize("text, expected", [
    ('userName eq "bjensen@example.com"', True),
    ('USERNAME EQ "BJensen@Example.com"', True),  # names, operators and (not case-exact) values
    ('userName eq "bjensen"', False),
    ('userName sw "BJEN"', True),
    ('userName ew "example.com"', True),
    ('userName co "sen@ex"', True),
    ('userName ne "bjensen@example.com"', False),
    ('id eq "2819C223-7F76-453A-919D-413861904646"', False),  # id is case-exact
    ('externalId eq "bj-1"', False),  # so is externalId
    ('externalId eq "BJ-1"', True),
    ('name.familyName eq "jensen"', True),
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName sw "b"', True),
    (f'{ENTERPRISE_USER_SCHEMA}:employeeNumber eq "701984"', True),
    (f'{ENTERPRISE_USER_SCHEMA}:manager.value eq "26118915"', True),
    ('title pr', False),  # an empty string is not present
    ('nickName pr', False),
    ('name pr', True),
    ('nickName ne "x"', True),  # an absent attribute matches ne, and nothing else
    ('nickName eq "x"', False),
    ('nickName eq null', True),
    ('userName eq null', False),
    ('userName ne null', True),
    ('active eq true', True),
    ('active eq false', False),
    ('active ne false', True),
    ('emails co "jensen.org"', True),  # any value of a multi-valued attribute
    ('emails.value ew ".org"', True),
    ('emails.type eq "work"', True),
    ('emails[type eq "work" and value co "@example.com"]', True),
    ('emails[type eq "home" and value co "@example.com"]', False),
    ('emails[not (type eq "work")]', True),
    ('schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"', True),
    ('meta.lastModified gt "2011-05-13T04:42:33Z"', True),
    ('meta.lastModified gt "2011-05-13T04:42:34Z"', False),
    ('meta.lastModified ge "2011-05-13T04:42:34+00:00"', True),  # compared as times
    ('meta.lastModified lt "2011-05-13T05:42:34+01:00"', False),
    ('meta.created lt "2011-01-01T00:00:00Z"', True),
    ('userName gt "a" and userName lt "c"', True),
    ('title pr or userType eq "Employee"', True),
    ('title pr and userType eq "Employee"', False),
    ('userType eq "Employee" and not (emails co "example.org" or title pr)', True),
    ('active gt 0', False),  # a number never equals or orders a boolean
])
def test_evaluation(text: str, expected: bool) -> None:
    assert matches(parse_filter(text), USER) is expected


def test_a_store_may_look_up_the_equality_every_match_needs() -> None:
    names = {"username", "externalid", "id"}
    assert required_equality(parse_filter('userName eq "A"'), names) == ("username", "A")
    assert required_equality(parse_filter('title pr and externalId eq "7"'), names) == (
        "externalid", "7")
    assert required_equality(parse_filter('userName eq "a" or title pr'), names) is None
    assert required_equality(parse_filter('userName co "a"'), names) is None
    assert required_equality(parse_filter('not (userName eq "a")'), names) is None
    assert required_equality(parse_filter('name.userName eq "a"'), names) is None
    assert required_equality(parse_filter(f'{ENTERPRISE_USER_SCHEMA}:id eq "a"'), names) is None


def test_patch_paths() -> None:
    assert parse_path("active") == PatchPath(_path("active"))
    assert parse_path("name.givenName") == PatchPath(_path("name", "givenName"))
    assert parse_path('members[value eq "2819c223"]') == PatchPath(
        _path("members"), Compare(_path("value"), "eq", "2819c223"))
    assert parse_path('emails[type eq "work"].value') == PatchPath(
        _path("emails"), Compare(_path("type"), "eq", "work"), "value")
    assert parse_path(f"{ENTERPRISE_USER_SCHEMA}:manager") == PatchPath(
        _path("manager", schema=ENTERPRISE_USER_SCHEMA))
    assert parse_attribute(" name.givenName ") == _path("name", "givenName")


@pytest.mark.parametrize("text", ["", "a b", 'emails[type eq "work"]value', "emails[type eq]",
                                  'emails[type eq "work"].value.x', "name.givenName[a pr]",
                                  "(active)", 'emails[type eq "work"].'])
def test_what_is_not_a_path_is_invalid_path(text: str) -> None:
    with pytest.raises(InvalidPath) as raised:
        parse_path(text)
    assert raised.value.scim_type == "invalidPath"


def test_a_value_filter_of_equalities_is_a_template_for_a_new_value() -> None:
    assert equality_template(parse_filter('type eq "work"')) == {"type": "work"}
    assert equality_template(parse_filter('type eq "work" and primary eq true')) == {
        "type": "work", "primary": True}
    assert equality_template(parse_filter('type co "work"')) is None
    assert equality_template(parse_filter('type eq "work" or type eq "home"')) is None
