"""Registering, reading back, removing and looking up models."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import InputError, NotFoundError, RegistryError
from monitor.records import FingerprintBlob, TensorDigest, WeightFile
from monitor.registry import Registry


def test_model_round_trips_with_files_tensors_and_fingerprints(registry, db_path, model_parts):
    files, tensors, fingerprints = model_parts("a", n_tensors=5)
    record = registry.add_model(name="llama-mini", owner="ml-team", source="/models/llama",
                                files=files, tensors=tensors, fingerprints=fingerprints,
                                actor="alice")

    assert (record.name, record.owner, record.source) == ("llama-mini", "ml-team", "/models/llama")
    assert record.registered_at == "2024-05-01T12:00:00.000000+00:00"  # from the injected clock
    assert (record.n_files, record.n_tensors, record.total_bytes) == (2, 5, 1000 + 1001)
    registry.close()

    with Registry.open(db_path) as reopened:  # it is on disk, not in a cache
        assert reopened.get_model("llama-mini") == record
        assert reopened.get_model(record.id) == record
        assert reopened.get_model(str(record.id)) == record
        assert reopened.list_models() == [record]
        assert reopened.model_files(record.id) == files
        assert reopened.model_tensors(record.id) == tensors  # insertion order, shape a tuple
        assert reopened.model_fingerprints(record.id) == fingerprints


def test_add_model_is_audited(registry, make_model):
    record = make_model("m")
    [entry] = registry.audit_log()
    assert (entry.actor, entry.action, entry.subject) == ("alice", "model.add", "model:m")
    assert entry.detail["id"] == record.id and entry.detail["tensors"] == 3


def test_duplicate_name_is_refused_and_changes_nothing(registry, make_model, counts):
    first = make_model("m", tag="one")
    before = counts()
    with pytest.raises(InputError, match=rf"^model 'm' is already registered \(id {first.id}\)$"):
        make_model("m", tag="two")
    assert counts() == before
    assert registry.model_files(first.id)[0].path.startswith("one/")


def test_a_tensor_in_an_unknown_file_fails_halfway_and_leaves_nothing(registry, model_parts,
                                                                       counts):
    files, tensors, fingerprints = model_parts("a", n_tensors=4)
    stray = dataclasses.replace(tensors[-1], file="not/listed.safetensors")
    before = counts()
    with pytest.raises(InputError, match="tensor 'layers.3.weight' is in file "
                                         "'not/listed.safetensors'"):
        registry.add_model(name="m", owner=None, source="/m", files=files,
                           tensors=[*tensors[:-1], stray], fingerprints=fingerprints, actor="a")
    assert counts() == before
    with pytest.raises(NotFoundError):
        registry.get_model("m")


def test_a_row_sqlite_refuses_after_150_tensors_rolls_everything_back(registry, model_parts,
                                                                      counts):
    # Tensors go in batches; the bad one is in the second batch, after the first was written.
    files, tensors, fingerprints = model_parts("a", n_tensors=150)
    broken = dataclasses.replace(tensors[-1], begin=100, end=10)  # violates CHECK end >= begin
    before = counts()
    with pytest.raises(RegistryError, match="CHECK constraint failed"):
        registry.add_model(name="m", owner=None, source="/m", files=files,
                           tensors=[*tensors[:-1], broken], fingerprints=fingerprints, actor="a")
    assert counts() == before


@pytest.mark.parametrize("name, problem", [
    ("", "model name is empty"),
    ("123", "all digits"),
])
def test_unusable_names_are_refused(registry, model_parts, name, problem):
    files, tensors, fingerprints = model_parts()
    with pytest.raises(InputError, match=problem):
        registry.add_model(name=name, owner=None, source="/m", files=files, tensors=tensors,
                           fingerprints=fingerprints, actor="a")


def test_same_fingerprint_version_twice_is_refused(registry, model_parts, counts):
    files, tensors, fingerprints = model_parts()
    with pytest.raises(InputError, match="fingerprint algorithm and version is given twice"):
        registry.add_model(name="m", owner=None, source="/m", files=files, tensors=tensors,
                           fingerprints=[*fingerprints, fingerprints[0]], actor="a")
    assert counts()["models"] == 0


def test_unknown_model_is_not_found(registry):
    with pytest.raises(NotFoundError, match=r"^no registered model 'nope'$"):
        registry.get_model("nope")
    with pytest.raises(NotFoundError, match=r"^no registered model '42'$"):
        registry.remove_model(42, actor="a")


def test_remove_cascades_and_events_keep_the_model_name(registry, make_model, new_event, counts):
    gone, kept = make_model("gone"), make_model("kept")
    event, _ = registry.record_event(new_event(gone), actor="crawler", channels=["log"])

    removed = registry.remove_model("gone", actor="bob")

    assert removed == gone
    with pytest.raises(NotFoundError):
        registry.get_model("gone")
    assert registry.list_models() == [kept]
    after = counts()
    # Only the kept model's rows remain: foreign keys are on and cascade.
    assert (after["model_files"], after["tensors"], after["fingerprints"]) == (2, 3, 2)
    assert registry.model_tensors(gone.id) == []
    survivor = registry.get_event(event.id)
    assert (survivor.model_id, survivor.model_name) == (None, "gone")
    assert after["outbox"] == 1
    assert registry.audit_log(limit=1)[0].action == "model.remove"
    assert registry.audit_log(limit=1)[0].actor == "bob"


def test_lookup_by_file_sha256_returns_only_matching_files(registry, make_model, model_parts):
    a = make_model("a")
    files, tensors, fingerprints = model_parts("b")
    shared = dataclasses.replace(files[0], sha256=registry.model_files(a.id)[0].sha256)
    b = registry.add_model(name="b", owner=None, source="/b", files=[shared, files[1]],
                           tensors=tensors, fingerprints=fingerprints, actor="x")
    a_files = registry.model_files(a.id)

    found = registry.models_with_file_sha256([a_files[0].sha256, "f" * 64])

    assert found == {a.id: [a_files[0]], b.id: [shared]}
    assert registry.models_with_file_sha256([]) == {}


def test_lookup_by_tensor_digest_ignores_constant_tensors(registry, make_model):
    a = make_model("a", n_tensors=3)  # a-digest-2 is constant
    found = registry.models_with_tensor_digests(["a-digest-0", "a-digest-2", "zzz"])
    assert found == {a.id: {"a-digest-0"}}


def test_lookup_by_thousands_of_digests_is_chunked(registry, make_model):
    # The registry caps a statement at 999 parameters, so one IN list of 2,500 would fail.
    a = make_model("a", n_tensors=1200, constant_last=False)
    b = make_model("b", n_tensors=2, constant_last=False)
    asked = [f"a-digest-{i}" for i in range(1200)] + [f"miss-{i}" for i in range(1300)]
    asked += ["b-digest-1", "a-digest-7"]  # a repeat and a match at the very end

    found = registry.models_with_tensor_digests(asked)

    assert found == {a.id: {f"a-digest-{i}" for i in range(1200)}, b.id: {"b-digest-1"}}
    shas = [f"{i:064x}" for i in range(3000)] + ["asha1".ljust(64, "0")]
    assert registry.models_with_file_sha256(shas) == {a.id: [registry.model_files(a.id)[1]]}


_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=st.lists(st.lists(st.integers(0, 2**40), max_size=4).map(tuple), min_size=1,
                       max_size=8),
       tensor_names=st.lists(_names, min_size=8, max_size=8),
       blob=st.binary(max_size=64))
def test_any_tensor_list_round_trips(tmp_path_factory, shapes, tensor_names, blob):
    path = tmp_path_factory.mktemp("prop") / "r.db"
    files = [WeightFile("w.gguf", 10, "0" * 64, "gguf")]
    tensors = [TensorDigest(tensor_names[i], "Q8_0", shape, "w.gguf", i, i + 1, f"d{i}", i % 2 == 0)
               for i, shape in enumerate(shapes)]
    fingerprints = [FingerprintBlob("robust", 3, blob)]
    with Registry.open(path) as reg:
        record = reg.add_model(name="m", owner=None, source="/m", files=files, tensors=tensors,
                               fingerprints=fingerprints, actor="a")
        assert reg.model_tensors(record.id) == tensors
        assert reg.model_fingerprints(record.id) == fingerprints
