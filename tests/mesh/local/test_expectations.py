"""mesh.local.expectations: every scenario states a valid expectation, bad annotations are refused clearly,
and `check` (mesh.local.judgement) passes crafted observations that meet an expectation and names every rule
they miss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mesh.api import ConfigError
from mesh.control import exposition
from mesh.local import expectations as ex
from mesh.local import judgement
from mesh.local.bands import miss_probability
from mesh.local.expectations import Expectation, ExpectationError
from mesh.local.judgement import Observations, Response
from mesh.manifests import releases

ROUTING = Path(__file__).resolve().parents[3] / "stacks" / "routing"
SHARED = ("gateway", "destination-rules")
SCENARIOS = sorted(p.stem for p in ROUTING.glob("*.yaml") if p.stem not in SHARED)
MAX_MISS = 1e-3  # a healthy mesh may fail a ratio band at most this often


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _carrier(scenario: str) -> dict:
    (doc,) = [d for d in _docs(ROUTING / f"{scenario}.yaml")
              if ex.ANNOTATION in (d["metadata"].get("annotations") or {})]
    return doc


# -- the scenario files ----------------------------------------------------------------------------------


def test_every_scenario_is_covered() -> None:
    assert set(SCENARIOS) >= {"round-robin", "all-v1", "ratings-50", "ratings-10-90", "delay-2s", "delay-5s",
                              "timeout-retries", "mirroring", "circuit-breaker", "mtls-strict", "authz-bookinfo"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_states_a_valid_expectation(scenario: str) -> None:
    expectation = ex.load(ROUTING / f"{scenario}.yaml")
    assert isinstance(expectation, Expectation)
    assert expectation.path == "/gateway/books"
    assert 200 in expectation.status or scenario == "delay-5s"
    doc = _carrier(scenario)  # on the scenario's own VirtualService, never on a shared document
    assert doc["kind"] == "VirtualService" and doc["metadata"]["name"] in ("books", "ratings")


@pytest.mark.parametrize("shared", SHARED)
def test_shared_documents_carry_no_expectation(shared: str) -> None:
    with pytest.raises(ExpectationError, match="no resource carries the weir.dev/expect annotation"):
        ex.load(ROUTING / f"{shared}.yaml")


def test_what_the_article_promises() -> None:
    rr = ex.load(ROUTING / "round-robin.yaml")
    assert set(rr.split["versions.books"]) == {"v1", "v2"} and rr.status == {200: (1.0, 1.0)}
    v1 = ex.load(ROUTING / "all-v1.yaml")
    assert v1.split["versions.books"] == {"v1": (1.0, 1.0)} and v1.split["versions.ratings"] == {"v1": (1.0, 1.0)}
    slow = ex.load(ROUTING / "delay-2s.yaml")
    assert slow.status == {200: (1.0, 1.0)} and slow.latency_ms["min"][0] >= 1900
    failed = ex.load(ROUTING / "delay-5s.yaml")
    assert set(failed.status) == {504} and failed.latency_ms["max"][1] < 5000  # gw gives up at 3 s
    mirror = ex.load(ROUTING / "mirroring.yaml")
    assert mirror.mirrored is not None and mirror.mirrored.count == ("requests", "requests")
    assert mirror.split["versions.ratings"] == {"v1": (1.0, 1.0)}
    breaker = ex.load(ROUTING / "circuit-breaker.yaml")
    assert breaker.concurrency > 2 and set(breaker.status) == {200, 503}
    assert all(low > 0 for low, _ in breaker.status.values()) and breaker.flags == {"gw-v1": ("UO",)}
    assert {s.chaos for s in breaker.setup} == {"books-v1", "books-v2"}
    retries = ex.load(ROUTING / "timeout-retries.yaml")
    assert [s.meshctl_args() for s in retries.setup] == [("chaos", "ratings-v1", "--error-rate", "0.5")]


def _ratings_weights(scenario: str) -> dict[str, float]:
    (vs,) = [d for d in _docs(ROUTING / f"{scenario}.yaml")
             if d["kind"] == "VirtualService" and d["metadata"]["name"] == "ratings"]
    routes = vs["spec"]["http"][0]["route"]
    total = sum(r.get("weight", 0) for r in routes)
    return {r["destination"]["subset"]: r["weight"] / total for r in routes}


@pytest.mark.parametrize("scenario", ["ratings-50", "ratings-10-90"])
def test_split_bands_are_statistically_sound(scenario: str) -> None:
    expectation = ex.load(ROUTING / f"{scenario}.yaml")
    weights = _ratings_weights(scenario)
    bands = expectation.split["versions.ratings"]
    assert set(bands) == set(weights)
    for version, p in weights.items():
        miss = miss_probability(expectation.requests, p, bands[version])
        assert miss < MAX_MISS, f"{version}: band {bands[version]} misses {miss:.1e} of healthy runs"
        # and not so wide that a wrong weight passes: 10 points off the weight falls outside
        assert not (bands[version][0] <= p - 0.15 or bands[version][1] >= p + 0.15)


def test_retry_band_is_statistically_sound() -> None:
    expectation = ex.load(ROUTING / "timeout-retries.yaml")
    (step,) = expectation.setup
    (vs,) = [d for d in _docs(ROUTING / "timeout-retries.yaml")
             if d["kind"] == "VirtualService" and d["metadata"]["name"] == "ratings"]
    tries = vs["spec"]["http"][0]["retries"]["attempts"] + 1
    success = 1 - step.error_rate**tries
    assert miss_probability(expectation.requests, success, expectation.status[200]) < MAX_MISS
    # without retries (success = 1 - error rate) the band must fail
    assert miss_probability(expectation.requests, 1 - step.error_rate, expectation.status[200]) > 0.999


# -- refused annotations ------------------------------------------------------------------------------------

GOOD = {"requests": 10, "status": {"200": [1, 1]}}


def _scenario(tmp_path: Path, annotation: object, carriers: tuple[str, ...] = ("books",)) -> Path:
    docs = _docs(ROUTING / "all-v1.yaml")
    for doc in docs:
        doc["metadata"].pop("annotations", None)
        if doc["kind"] == "VirtualService" and doc["metadata"]["name"] in carriers:
            text = annotation if isinstance(annotation, str) else yaml.safe_dump(annotation)
            doc["metadata"]["annotations"] = {ex.ANNOTATION: text}
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_a_good_annotation_loads(tmp_path: Path) -> None:
    expectation = ex.load(_scenario(tmp_path, GOOD))
    assert expectation.requests == 10 and expectation.concurrency == 1 and expectation.setup == ()
    assert expectation.status == {200: (1.0, 1.0)}
    with pytest.raises(ValidationError, match="frozen"):
        expectation.requests = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"requests": None}, "requests", "required value is missing"),
        ({"status": None}, "status", "required value is missing"),
        ({"requests": 0}, "requests", "must be >= 1"),
        ({"surprise": 1}, "surprise", "unknown field"),
        ({"status": {"200": [0.9]}}, "status.200", "expected [min, max]"),
        ({"status": {"200": [0.9, 0.1]}}, "status.200", "min is greater than max"),
        ({"status": {"200": [0.5, 1.5]}}, "status.200", "must be a fraction in [0, 1]"),
        ({"status": {"200": ["a", 1]}}, "status.200", "expected a number or null"),
        ({"status": {"700": [0, 1]}}, "status.700", "invalid status code 700"),
        ({"status": {}}, "status", "at least 1 item"),
        ({"split": {"versions..x": {"v1": [0, 1]}}}, "split", "dotted path"),
        ({"split": {"versions.books": {}}}, "split.versions.books", "at least one value"),
        ({"split": {"versions.books": {"v1": [0, 2]}}}, "split.versions.books.v1", "fraction in [0, 1]"),
        ({"latencyMs": {"p50": [-1, 10]}}, "latencyMs.p50", "must be >= 0 ms"),
        ({"latencyMs": {"median": [1, 10]}}, "latencyMs", "expected min, max, mean or pNN"),
        ({"concurrency": 11}, "concurrency", "more than the 10 requests"),
        ({"setup": [{"chaos": "books-v1"}]}, "setup[0]", "needs errorRate or delay"),
        ({"setup": [{"chaos": "Books_v1", "delay": 1}]}, "setup[0].chaos", "invalid workload"),
        ({"setup": [{"chaos": "books-v1", "delay": "soon"}]}, "setup[0].delay", "invalid duration"),
        ({"setup": [{"chaos": "books-v1", "errorRate": 2}]}, "setup[0].errorRate", "must be <= 1"),
        ({"setup": [{"chaos": "b", "delay": 1}, {"chaos": "b", "errorRate": 1}]}, "setup", "one chaos step"),
        ({"mirrored": {"workload": "ratings-v2", "count": [1, 1]}}, "mirrored.source", "missing"),
        ({"mirrored": {"workload": "ratings-v2", "source": "books-v1", "count": ["all", 1]}},
         "mirrored.count", "a number, requests or null"),
        ({"flags": {"gw-v1": ["OU"]}}, "flags.gw-v1", "unknown response flags ['OU']"),
        ({"counters": {"gw-v1": {"weir_x{a=1}": [1, None]}}}, "counters.gw-v1", "invalid labels"),
        ({"path": "gateway/books"}, "path", "must start with /"),
    ],
)
def test_bad_annotation_is_refused_naming_file_resource_and_field(tmp_path, change, field, message) -> None:
    annotation = {**GOOD, **change}
    annotation = {k: v for k, v in annotation.items() if v is not None}
    path = _scenario(tmp_path, annotation)
    with pytest.raises(ExpectationError) as err:
        ex.load(path)
    assert err.value.file == str(path)
    assert err.value.resource == "VirtualService/bookinfo/books"
    assert err.value.path == f"{ex.ANNOTATION_PATH}.{field}"
    assert message in err.value.message
    assert str(err.value).startswith(f"{path}: VirtualService/bookinfo/books: {ex.ANNOTATION_PATH}.{field}: ")


@pytest.mark.parametrize(("text", "message"), [("requests: [1", "invalid YAML"), ("- 1\n- 2", "expected a mapping")])
def test_annotation_that_is_no_mapping(tmp_path, text, message) -> None:
    with pytest.raises(ExpectationError, match=message) as err:
        ex.load(_scenario(tmp_path, text))
    assert err.value.path == ex.ANNOTATION_PATH and err.value.resource == "VirtualService/bookinfo/books"


def test_only_one_resource_may_carry_it(tmp_path) -> None:
    with pytest.raises(ExpectationError, match="only one resource.*VirtualService/bookinfo/books.*ratings"):
        ex.load(_scenario(tmp_path, GOOD, carriers=("books", "ratings")))


def test_an_invalid_scenario_is_refused_by_mesh_api(tmp_path) -> None:
    path = _scenario(tmp_path, GOOD)
    path.write_text(path.read_text().replace("number: 9080", "number: 99999", 1))
    with pytest.raises(ex.ConfigError, match="99999") as err:
        ex.load(path)
    assert not isinstance(err.value, ExpectationError)


# -- check -------------------------------------------------------------------------------------------------

FULL = {
    "requests": 10,
    "concurrency": 2,
    "setup": [{"chaos": "books-v1", "delay": "200ms", "status": 503}],
    "status": {"200": [0.5, 1.0], "503": [0.1, 0.5]},
    "split": {"versions.ratings": {"v1": [0.25, 0.75], "v2": [0.25, 0.75]}},
    "latencyMs": {"p50": [10, 100], "max": [None, 1000]},
    "mirrored": {"workload": "ratings-v2", "source": "books-v1", "count": ["requests", "requests"]},
    "flags": {"gw-v1": ["UO"]},
    "counters": {"gw-v1": {'weir_circuit_breaker_overflow_total{cluster="books"}': [1, None]}},
}


def _body(ratings: str) -> bytes:
    return json.dumps({"books": [{"id": 1, "rating": {"stars": 4}}],
                       "versions": {"gw": "v1", "books": "v1", "ratings": ratings}}).encode()


def _series(reporter: str, source: str, code: int, flags: str, count: float) -> str:
    return (f'istio_requests_total{{reporter="{reporter}",source_workload="{source}",'
            f'destination_workload="x",response_code="{code}",response_flags="{flags}"}} {count:g}')


def _gw_stats(uo: float, overflow: float) -> str:
    return "\n".join([
        "# TYPE istio_requests_total counter",
        _series("source", "gw-v1", 200, "-", 5),
        _series("source", "gw-v1", 503, "UO", uo),
        _series("source", "gw-v1", 504, "UT,URX", 1),
        f'weir_circuit_breaker_overflow_total{{cluster="books"}} {overflow:g}',
        f'weir_circuit_breaker_overflow_total{{cluster="ratings"}} {overflow + 7:g}',
    ]) + "\n"


def _v2_stats(mirrored: float) -> str:
    return "\n".join([
        _series("destination", "books-v1", 200, "-", mirrored),
        _series("destination", "books-v2", 200, "-", 100),  # another caller: not mirrored traffic
        _series("source", "ratings-v2", 200, "-", 50),
    ])


def _met() -> dict:
    responses = ([Response(200, _body("v1"), 20.0)] * 4 + [Response(200, _body("v2"), 30.0)] * 4
                 + [Response(503, b'{"service": "books"}', 5.0)] * 2)
    return {
        "responses": responses,
        "stats_before": {"gw-v1": _gw_stats(1, 1), "ratings-v2": _v2_stats(40)},
        "stats_after": {"gw-v1": _gw_stats(3, 3), "ratings-v2": _v2_stats(50)},
    }


@pytest.fixture
def full() -> Expectation:
    return ex.parse(yaml.safe_dump(FULL))


def test_met_expectation_has_no_failures(full) -> None:
    assert full.workloads == ("gw-v1", "ratings-v2")
    assert judgement.check(full, Observations(**_met())) == []


def test_observations_from_dict(full) -> None:
    met = _met()
    data = {
        "responses": [{"status": r.status, "body": r.body.decode(), "latencyMs": r.latency_ms}
                      for r in met["responses"]],
        "statsBefore": met["stats_before"],
        "statsAfter": met["stats_after"],
    }
    assert judgement.check(full, Observations.from_dict(json.loads(json.dumps(data)))) == []


def _replace(index: int, response: Response) -> dict:
    met = _met()
    met["responses"] = [response if i == index else r for i, r in enumerate(met["responses"])]
    return met


def _stats(which: str, workload: str, text: str) -> dict:
    met = _met()
    met[which] = {**met[which], workload: text}
    return met


@pytest.mark.parametrize(
    ("observations", "failure"),
    [
        ({**_met(), "responses": _met()["responses"][:9]}, "requests: 9 responses collected, expected 10"),
        ({**_met(), "responses": []}, "no responses to judge"),
        # status: a share outside its band, a code not listed, no response at all
        ({**_met(), "responses": [Response(200, _body("v1"), 20.0)] * 5 + [Response(200, _body("v2"), 20)] * 5},
         "status 503: share 0.000 (0/10), expected [0.1, 0.5]"),
        (_replace(0, Response(500, b"", 20.0)), "status 500: share 0.100 (1/10), expected none (not listed)"),
        (_replace(0, Response(ex.NO_RESPONSE, "timed out", 20.0)), "status 0: share 0.100"),
        # split: a share outside its band, a value not listed, a body without the field
        ({**_met(), "responses": [Response(200, _body("v1"), 20.0)] * 7 + [Response(200, _body("v2"), 20)]
          + [Response(503, b"", 5.0)] * 2}, "split versions.ratings = v1: share 0.875 (7/8), expected [0.25, 0.75]"),
        (_replace(0, Response(200, _body("v3"), 20.0)), "split versions.ratings = v3: share 0.125 (1/8), expected none"),
        (_replace(0, Response(200, b"<html>", 20.0)),
         f"split versions.ratings = {judgement.MISSING}: share 0.125"),
        ({**_met(), "responses": [Response(503, b"", 5.0)] * 10}, "split versions.ratings: no 200 answers"),
        # latency
        (_replace(9, Response(503, b"", 5000.0)), "latency max: 5000 ms, expected [null, 1000] ms"),
        ({**_met(), "responses": [Response(200, _body("v1"), 200.0)] * 4 + [Response(200, _body("v2"), 200)] * 4
          + [Response(503, b"", 5.0)] * 2}, "latency p50: 200 ms, expected [10, 100] ms"),
        # mirrored: too few, too many
        (_stats("stats_after", "ratings-v2", _v2_stats(45)),
         "mirrored: ratings-v2 received 5 requests from books-v1, expected [10, 10]"),
        (_stats("stats_after", "ratings-v2", _v2_stats(51)), "mirrored: ratings-v2 received 11 requests"),
        # flags: UO was there before but not counted during the run
        (_stats("stats_before", "gw-v1", _gw_stats(3, 1)), "flags gw-v1: no new response with flag UO (new flags: none)"),
        # counters: the books cluster's overflow did not grow (the ratings one did, it does not count)
        (_stats("stats_after", "gw-v1", _gw_stats(3, 1).replace('"ratings"} 8', '"ratings"} 99')),
         'counter gw-v1 weir_circuit_breaker_overflow_total{cluster="books"}: grew by 0, expected [1, null]'),
        # stats not scraped
        ({**_met(), "stats_before": {"gw-v1": _gw_stats(1, 1)}}, "stats of ratings-v2 not scraped"),
    ],
)
def test_each_rule_can_fail(full, observations, failure) -> None:
    failures = judgement.check(full, Observations(**observations))
    assert any(f.startswith(failure) for f in failures), failures


def test_unmet_rules_are_all_reported(full) -> None:
    observed = Observations([Response(500, b"", 9000.0)] * 10, {}, {})
    failures = judgement.check(full, observed)
    assert len(failures) >= 5, failures  # 200, 500, 503 shares, split, latencies, stats


def test_flags_are_matched_one_by_one_in_combined_flags() -> None:
    expectation = ex.parse(yaml.safe_dump({**GOOD, "requests": 1, "flags": {"books-v1": ["UT", "URX"]}}))
    before = _series("source", "books-v1", 504, "UT,URX", 1)
    after = _series("source", "books-v1", 504, "UT,URX", 2)
    observed = Observations([Response(200, b"{}", 1.0)], {"books-v1": before}, {"books-v1": after})
    assert judgement.check(expectation, observed) == []


# -- helpers -----------------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert judgement.percentile(values, "p50") == 50 and judgement.percentile(values, "p99") == 99
    assert judgement.percentile(values, "p99.9") == 100 and judgement.percentile(values, "p0") == 1
    assert judgement.percentile([3.0, 1.0, 2.0], "min") == 1 and judgement.percentile([3.0, 1.0], "max") == 3
    assert judgement.percentile([1.0, 2.0], "mean") == 1.5


def test_field_values() -> None:
    body = _body("v2")
    assert judgement.field_value(body, "versions.ratings") == "v2"
    assert judgement.field_value(body, "books.0.rating.stars") == "4"
    assert judgement.field_value(body.decode(), "books.1.rating") == judgement.MISSING
    assert judgement.field_value(b"not json", "versions.ratings") == judgement.MISSING


def test_selectors_and_samples() -> None:
    assert exposition.parse_selector("up") == ("up", {})
    assert exposition.parse_selector('m{a="x",b="y \\"q\\""}') == ("m", {"a": "x", "b": 'y "q"'})
    with pytest.raises(ValueError):
        exposition.parse_selector("m{a=x}")
    text = '# TYPE m counter\nm{a="1"} 2\nm{a="2"} 3.5\nother 1\ngarbage line here\n'
    assert exposition.samples(text) == [("m", {"a": "1"}, 2.0), ("m", {"a": "2"}, 3.5), ("other", {}, 1.0)]


def test_chaos_step_commands() -> None:
    step = ex.ChaosStep.model_validate({"chaos": "books-v1", "errorRate": 0.25, "delay": "1.5s", "status": 503})
    assert step.meshctl_args() == ("chaos", "books-v1", "--error-rate", "0.25", "--delay", "1.5", "--status", "503")
    assert step.reset_args() == ("chaos", "books-v1", "--reset")
    assert ex.ChaosStep.model_validate({"chaos": "b", "delay": 0.2}).meshctl_args() == ("chaos", "b", "--delay", "0.2")


def test_miss_probability() -> None:
    assert miss_probability(10, 0.5, (0.0, 1.0)) == 0
    assert math.isclose(miss_probability(2, 0.5, (0.5, 0.5)), 0.5)
    assert math.isclose(miss_probability(1, 0.3, (None, 0.5)), 0.3)


def test_probes_are_judged_with_the_rest() -> None:
    exp = Expectation.model_validate({"requests": 1, "status": {"200": [1, 1]},
                                      "probes": [{"direct": "books-v1", "path": "/books", "refused": True}]})
    ok = [Response(200, "{}", 1.0)]
    refused = [ex.probes_mod.ProbeResult(None, error="reset")]
    assert judgement.check(exp, Observations(ok, probe_results=refused)) == []
    answered = Observations.from_dict({"responses": [{"status": 200, "latencyMs": 1}],
                                       "probeResults": [{"status": 200, "body": "plaintext served"}]})
    assert judgement.check(exp, answered) == [
        "probe direct to books-v1 GET /books: expected the connection refused, got 200 'plaintext served'"]


# -- releases and rules ----------------------------------------------------------------------------------------


def test_a_release_states_the_expectation_of_its_scenario() -> None:
    release = releases.ReleaseStore(ROUTING.parents[1]).get("ratings-50@v1")
    from_release = ex.from_resources(release.resources, file="stacks/releases/ratings-50/v1.yaml")
    assert from_release == ex.load(ROUTING / "ratings-50.yaml")


def test_resources_are_validated_naming_the_file() -> None:
    bad = {**_carrier("all-v1"), "spec": {"hosts": ["*"], "http": "nope"}}
    with pytest.raises(ConfigError, match="release.yaml"):
        ex.from_resources([bad], file="release.yaml")
    with pytest.raises(ExpectationError, match="no resource carries"):
        ex.from_resources([], file="release.yaml")


def test_check_rules_names_only_the_stated_rules(full) -> None:
    by_rule = judgement.check_rules(full, Observations(**_met()))
    assert set(by_rule) == set(judgement.rules_of(full)) and all(v == [] for v in by_rule.values())
    observed = Observations([Response(500, b"", 9000.0)] * 10, {}, {})
    failing = judgement.check_rules(full, observed)
    assert failing["status"] and failing["latency"]
    assert sum(failing.values(), []) == judgement.check(full, observed)
    minimal = ex.parse(yaml.safe_dump({"requests": 1, "status": {"200": [1.0, 1.0]}}))
    assert judgement.rules_of(minimal) == ("status",)
