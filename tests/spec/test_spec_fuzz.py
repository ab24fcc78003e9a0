"""Property-based: any input to the spec loader is either valid or located errors, never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import SpecError
from runner.spec.loader import LoadedSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_TEXTS = [p.read_text() for p in sorted((ROOT / "experiments").glob("*.yaml"))]
WORKDIR = Path(tempfile.mkdtemp(prefix="exprun-fuzz-"))
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


def check(content: str | bytes) -> LoadedSpec | None:
    """Load content as a spec file; the only acceptable failure is a SpecError with locations."""
    path = WORKDIR / "fuzzed.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        return load_spec(path)
    except SpecError as error:
        assert error.issues
        lines = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        line_count = max(1, lines.count(b"\n") + 1)
        for issue in error.issues:
            assert 1 <= issue.line <= line_count + 1, issue
            assert issue.column >= 1 and issue.message and issue.path, issue
            assert "\n" not in str(issue), issue
        return None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["1KiB", "100MB", "250ms", "2s", "unlimited", "kafka", "nats", "embedded"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "version",
            "name",
            "brokers",
            "defaults",
            "scenarios",
            "variants",
            "baseline",
            "repetitions",
            "warmup",
            "targets",
            "reports",
            "type",
            "workers",
            "stream",
            "messages",
            "topic",
            "producer",
            "endpoint",
            "change",
            "value",
            "metric",
        ]
    ),
    st.text(min_size=1, max_size=12),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)
    ),
    max_leaves=30,
)


@FUZZ
@given(documents)
def test_random_documents(document: object) -> None:
    check(yaml.safe_dump(document, allow_unicode=True))


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(SPEC_TEXTS)).splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not lines:
            break
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "char", "value", "indent", "insert"]))
        line = lines[index]
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, line)
        elif action == "char" and line:
            at = draw(st.integers(min_value=0, max_value=len(line) - 1))
            lines[index] = line[:at] + draw(st.characters()) + line[at + 1 :]
        elif action == "value" and ":" in line:
            head = line.rsplit(":", 1)[0]
            value = draw(scalars)
            lines[index] = f"{head}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
            lines[index] = lines[index].removesuffix("...").rstrip()
        elif action == "indent":
            lines[index] = draw(st.sampled_from(["", " ", "  ", "    ", "\t"])) + line.lstrip()
        else:
            lines.insert(index, draw(st.text(max_size=30)))
    return "\n".join(lines) + "\n"


@FUZZ
@given(mutated_specs())
def test_mutated_committed_specs(text: str) -> None:
    check(text)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=400))
def test_binary_garbage(content: bytes) -> None:
    check(content)
