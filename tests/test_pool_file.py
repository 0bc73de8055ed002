"""pool.json cannot lie: every field of a valid pool file is mutated (wrong type, wrong value, removed,
duplicated), with and without a recomputed digest. Reading it (and checking it against its data set)
either refuses it with one line that `lst-fast` turns into exit code 1, or gives the very same pool; never
an unexpected error (exit code 2), never another pool from a file that was changed without re-signing."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lst_fast.cli.errors import is_expected
from lst_fast.data.sources import open_image_set
from lst_fast.evaluation.pool import build_pool, load_pool
from lst_fast.evaluation.pool_file import content_digest
from lst_fast.run_environment import QUIET_ENVIRONMENT

DATA = "fashion-mnist-sample"


@lru_cache(maxsize=1)
def _valid() -> str:
    pool, _ = build_pool(["cnn", "vit"], DATA, 6, 0.6, seed=3, rounds=2, env=QUIET_ENVIRONMENT)
    return json.dumps(pool.to_dict(), indent=1, allow_nan=False)


@lru_cache(maxsize=1)
def _data():
    return open_image_set(DATA)


def _paths(value: Any, prefix: Tuple = ()) -> List[Tuple]:
    """Every field's path in a JSON value (object keys and list positions; lists: their first two)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for k, item in enumerate(value[:2]):
            found += _paths(item, prefix + (k,))
    return found


REPLACEMENTS = st.sampled_from(
    ["x", "", 0, -1, 1, 2**70, 0.5, -0.0, 1e308, True, False, None, [], [1, 1], {}, {"a": 1}, "0" * 64]
)


def _outcome(text: str, tmp_path) -> Tuple[str, Any]:
    """("refused", message) or ("read", pool), after load_pool and check_data on the data set."""
    path = tmp_path / "pool.json"
    path.write_text(text)
    try:
        pool = load_pool(path)
        pool.check_data(_data(), DATA, str(path))
    except Exception as error:  # noqa: BLE001  what the command line would do with it
        assert is_expected(error), f"{type(error).__name__}: {error}"  # exit 1, not 2
        message = str(error)
        assert message and "\n" not in message, message  # one line
        return "refused", message
    return "read", pool


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), resign=st.booleans())
def test_every_mutation_of_a_pool_file_is_refused_in_one_line_or_changes_nothing(tmp_path, data, resign):
    valid = json.loads(_valid())
    paths = _paths(valid)
    where = data.draw(st.sampled_from(paths), label="field")
    how = data.draw(st.sampled_from(["type", "value", "remove", "duplicate"]), label="mutation")
    changed = copy.deepcopy(valid)
    parent = changed
    for key in where[:-1]:
        parent = parent[key]
    last = where[-1]
    text = None
    if how in ("type", "value"):
        parent[last] = data.draw(REPLACEMENTS, label="new value")
    elif how == "remove":
        del parent[last]
    elif isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    else:  # a repeated key in the JSON text, with another value
        marker = "__lst_fast_marker__"
        parent[marker] = data.draw(REPLACEMENTS, label="repeated value")
        text = json.dumps(changed).replace(json.dumps(marker), json.dumps(last))
    if resign and text is None and isinstance(changed, dict) and "scan" in changed:
        try:
            changed["digest"] = content_digest(changed)
        except (TypeError, KeyError, ValueError):
            pass  # a body that cannot even be digested is refused anyway
    kind, found = _outcome(text if text is not None else json.dumps(changed), tmp_path)
    original = load_pool_from_text(_valid(), tmp_path)
    if kind == "read" and not resign:
        assert found.digest == original.digest and found.to_dict() == changed  # nothing that counts changed
        assert found.settings() == original.settings() and found.indices.tolist() == original.indices.tolist()


def test_every_field_out_of_range_and_re_signed_is_refused_in_one_line_or_read(tmp_path):
    """The sampled test above draws 60 of the mutations; this one tries the values that overflow or underflow
    a number (2**70 once reached torch.tensor through `labels`: a ValueError naming no file) in every field,
    re-signed so that the digest does not refuse them first."""
    valid = json.loads(_valid())
    for where in _paths(valid):
        for value in (2**70, -(2**70), -1, 1e308, "x", None):
            changed = copy.deepcopy(valid)
            parent = changed
            for key in where[:-1]:
                parent = parent[key]
            parent[where[-1]] = value
            try:
                changed["digest"] = content_digest(changed)
            except (TypeError, KeyError, ValueError):
                pass  # a body that cannot even be digested is refused anyway
            _outcome(json.dumps(changed), tmp_path)  # asserts a one-line refusal when it is not read


def load_pool_from_text(text: str, tmp_path):
    path = tmp_path / "original.json"
    path.write_text(text)
    return load_pool(path)


@pytest.mark.parametrize(
    "field,value,match",
    [
        (("indices", 1), "INDEX0", "indices must be distinct"),
        (("indices", 0), 1.0, "indices must be a list of integers"),
        (("indices", 0), 100, r"indices must be a list of integers in \[0, 99\]"),
        (("indices", 0), -1, "indices must be a list of integers"),
        (("settings", "seed"), 2**63, r"settings.seed must be an integer in \[0, 4,294,967,295\]"),
        (("labels", 0), 2**70, r"labels must be \d+ integers in \[0, 9223372036854775807\]"),
        (("scan", "scanned"), 10**6, "scan.scanned must be an integer"),
        (("data", "pixels_sha256"), "no", "data.pixels_sha256 must be a SHA-256"),
    ],
)
def test_bad_fields_are_named_even_in_a_re_signed_file(tmp_path, field, value, match):
    changed = json.loads(_valid())
    parent = changed
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = changed["indices"][0] if value == "INDEX0" else value
    changed["digest"] = content_digest(changed)
    kind, message = _outcome(json.dumps(changed), tmp_path)
    assert kind == "refused" and "is a malformed pool file (" in message
    assert __import__("re").search(match, message), message


def test_every_field_the_code_reads_is_signed(tmp_path):
    """Changing scan.scanned (which images the leaderboard's scan covers) or a maker's preprocessing
    without re-signing is refused: the digest covers them (on main it covered neither)."""
    for field, value in ((("scan", "scanned"), None), (("models", 0, "preprocessing", "crop_pct"), 0.5)):
        changed = json.loads(_valid())
        parent = changed
        for key in field[:-1]:
            parent = parent[key]
        parent[field[-1]] = value if value is not None else parent[field[-1]] + 1
        kind, message = _outcome(json.dumps(changed), tmp_path)
        assert kind == "refused" and "changed since it was written" in message, message


def test_a_data_set_with_other_pixels_and_the_same_labels_is_refused(tmp_path):
    from safetensors.torch import save_file

    from lst_fast.data.fashion_mnist import load_sample

    images, labels = load_sample()
    save_file({"images": images.contiguous(), "labels": labels.contiguous()}, str(tmp_path / "data.safetensors"))
    spec = f"tensor:{tmp_path / 'data.safetensors'}"
    pool, _ = build_pool(["cnn"], spec, 6, rounds=2, env=QUIET_ENVIRONMENT)
    pool.check_data(open_image_set(spec), spec)  # the same file: accepted
    brighter = (images * 0.9 + 0.05).contiguous()
    save_file({"images": brighter, "labels": labels.contiguous()}, str(tmp_path / "data.safetensors"))
    with pytest.raises(ValueError, match="other pixels") as error:
        pool.check_data(open_image_set(spec), spec)
    assert is_expected(error.value) and "\n" not in str(error.value)
