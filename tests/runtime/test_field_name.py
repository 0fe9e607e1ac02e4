"""The one escape of ids used as MongoDB field names (read markers, in im-api and in delivery)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from im_runtime.mongo import field_name

pytestmark = pytest.mark.unit


def test_dots_dollars_and_the_escape_character_itself_are_escaped():
    assert field_name("ann.lee") == "ann%2Elee"
    assert field_name("$where") == "%24where"
    assert field_name("50%.off") == "50%25%2Eoff"
    assert field_name("ann@acme:desk-1") == "ann@acme:desk-1", "every other id character stays"


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_two_different_ids_never_share_a_field_and_no_field_holds_a_dot_or_dollar(a, b):
    assert "." not in field_name(a) and "$" not in field_name(a)
    if a != b:
        assert field_name(a) != field_name(b)
