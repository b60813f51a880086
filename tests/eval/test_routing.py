"""λ per question: the router, its calibration, the signals, routed runs (local and fleet), the frontier."""

from __future__ import annotations

import csv
import json
import math
import random
import threading

import pytest
import torch

from common import merge, mi_config
from mi_mergekit.analysis import stages
from mi_mergekit.eval.frontier import frontier_rows, headline, paired_difference
from mi_mergekit.eval import EvalTask, evaluate, load_run, write_report
from mi_mergekit.eval.backends import Backend, Completion
from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
from mi_mergekit.eval.graders import get_grader
from mi_mergekit.routing.policy import Outcome, Router, RouterError, fit, question_hash
from mi_mergekit.routing.run import GridBackends, routed_evaluate
from mi_mergekit.routing.signals import compute_signals, disagreement, divergence, question_records, signal_values
from openai_server import CompletionServer


# ------------------------------------------------------------------ the router


def test_router_routes_by_thresholds_and_direction():
    router = Router("s", (0.4, 0.8, 1.0), (0.5, 2.0), direction=1, calibration_values=tuple(range(10)))
    assert [router.route(v) for v in (-1, 0.5, 0.6, 2.0, 2.5)] == [0.4, 0.4, 0.8, 0.8, 1.0]
    flipped = Router("s", (0.4, 0.8, 1.0), (-2.0, -0.5), direction=-1)
    assert [flipped.route(v) for v in (3, 1, 0)] == [0.4, 0.8, 1.0]
    assert set(router.shifted(0).assign({str(v): v for v in range(-5, 15)}).values()) == {0.4}
    assert set(router.shifted(1).assign({str(v): v for v in range(-5, 15)}).values()) == {1.0}
    assert router.shifted(0.5).thresholds == router.thresholds
    again = Router.from_json(json.loads(json.dumps(router.shifted(0.6).to_json())))
    assert again.thresholds == (-math.inf, 0.5) and again.route(-100) == 0.8  # -inf survives JSON
    with pytest.raises(RouterError, match="ascending thresholds"):
        Router("s", (0.4, 1.0), (1.0, 2.0))
    with pytest.raises(RouterError, match="cannot route"):
        router.route(float("nan"))


def _outcomes(n=40, seed=0):
    """Questions with difficulty d in 1..4 (the signal): d <= 2 are solved at every λ; harder ones only
    at λ = 1. Tokens grow with λ. The best routing is known: d <= 2 to the lowest λ, the rest to λ = 1."""
    rng = random.Random(seed)
    values, table = {}, {}
    for i in range(n):
        d = 1 + i % 4
        values[f"q{i}"] = d + rng.uniform(-0.2, 0.2)
        table[f"q{i}"] = {lam: Outcome(1.0 if d <= 2 or lam == 1.0 else 0.0, 10 * d * (1 + lam))
                          for lam in (0.4, 0.6, 1.0)}
    return values, table


def test_fit_finds_the_known_best_routing():
    values, table = _outcomes()
    router = fit("d", values, table, objective="fewest-tokens", tolerance=0.0, quantiles=4)
    assignment = router.assign(values)
    assert all(assignment[q] == (0.4 if round(v) <= 2 else 1.0) for q, v in values.items())
    assert router.direction == 1 and router.fit["calibration"]["mean"] == 1.0
    assert router.fit["calibration"]["tokens_mean"] < router.fit["calibration_top"]["tokens_mean"]
    # the same questions with the signal's sign flipped: the other direction, the same routing
    flipped = fit("d", {q: -v for q, v in values.items()}, table, tolerance=0.0, quantiles=4)
    assert flipped.direction == -1 and flipped.assign({q: -v for q, v in values.items()}) == assignment
    best = fit("d", values, table, objective="best-accuracy", quantiles=4)
    assert best.fit["calibration"]["mean"] == 1.0


def test_fit_refuses_mismatched_questions():
    values, table = _outcomes()
    with pytest.raises(RouterError, match="different questions"):
        fit("d", {**values, "extra": 1.0}, table)


# ------------------------------------------------------------------ signals


class Scripted(Backend):
    """Returns given texts (a random tiny model cannot be made to answer 3, 3, 4)."""

    name, chunk_size = "scripted", 4

    def __init__(self, texts):
        self.texts = texts

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            yield chunk, [Completion(t, 3, "stop") for t in self.texts[chunk.question_id]]


def test_disagreement_is_the_share_outside_the_largest_answer_cluster():
    records = [{"question_id": q, "prompt": "p", "messages": [], "answer": "3"} for q in ("a", "b", "c")]
    texts = {"a": ["\\boxed{3}", "so 3", "\\boxed{3.0}", "\\boxed{4}"],  # 3, 3, 3.0 agree (math-verify)
             "b": ["\\boxed{1}", "\\boxed{2}", "nothing", "no answer"],
             "c": ["nothing"] * 4}
    found = disagreement(Scripted(texts), records, get_grader("math", "strict"), samples=4)
    assert found["a"]["disagreement"] == 0.25
    assert found["b"]["disagreement"] == 0.75
    assert found["c"]["disagreement"] == 1.0  # no answer never agrees


def test_divergence_is_the_mean_kl_over_the_question(dense_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    instruct, thinking = dense_pair
    tokenizer = AutoTokenizer.from_pretrained(thinking)
    t = AutoModelForCausalLM.from_pretrained(thinking, dtype=torch.float32).eval()
    i = AutoModelForCausalLM.from_pretrained(instruct, dtype=torch.float32).eval()
    record = {"prompt": tokenizer.apply_chat_template([{"role": "user", "content": "w5 w6 w7"}], tokenize=False,
                                                      add_generation_prompt=True),
              "messages": [{"role": "user", "content": "w5 w6 w7"}]}
    ids = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
    first = ids.index(tokenizer.convert_tokens_to_ids("w5"))
    with torch.no_grad():
        lt, li = t(torch.tensor([ids])).logits[0, first:], i(torch.tensor([ids])).logits[0, first:]
    oracle = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=lt),
                                               torch.distributions.Categorical(logits=li)).mean()
    assert divergence(t, i, tokenizer, record) == pytest.approx(float(oracle), rel=1e-3)  # float32 KL of close models
    assert divergence(t, t, tokenizer, record) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ routed runs, end to end

QUESTIONS = {"calibration": ["w1 w2", "w3", "w4 w5 w6", "w7 w8"], "test": ["w9 w10", "w11", "w12 w13 w14", "w15"]}
SAMPLING = dict(n_samples=2, max_new_tokens=4, seed=3)


@pytest.fixture(scope="module")
def routing_setup(dense_pair, tmp_path_factory):
    """Merges at λ 0.5 and 1 of the tiny pair, calibration and test files, and static runs of both."""
    instruct, thinking = dense_pair
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the function-scoped _one_torch_thread, which runs after this fixture
    root = tmp_path_factory.mktemp("routing")
    grid = {}
    for lam in (0.5, 1.0):
        grid[lam] = root / f"mi_{lam:g}"
        merge(mi_config(instruct, thinking, lam=lam), grid[lam])
    files, static = {}, {}
    for split, questions in QUESTIONS.items():
        files[split] = root / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps({"id": f"{split[0]}{i}", "prompt": q, "answer": "3"}) + "\n"
                                        for i, q in enumerate(questions)))
        for lam, model in grid.items():
            static[(split, lam)] = evaluate(model, EvalTask(files[split], **SAMPLING),
                                            out_dir=root / f"{split}_{lam:g}", lambda_=lam, label=f"mi_{lam:g}",
                                            backend_options={"batch_size": 1}, progress=False)
    signals = {split: compute_signals(str(path), instruct=instruct, thinking=thinking, samples=2, max_new_tokens=3,
                                      prompt_batch=2, progress=False) for split, path in files.items()}
    torch.set_num_threads(threads)
    return {"root": root, "grid": grid, "files": files, "static": static, "signals": signals,
            "instruct": instruct, "thinking": thinking}


def _samples(run_dir):
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {(r["question_id"], r["sample_index"]): r for r in rows}


def test_signals_cover_every_question_and_record_their_cost(routing_setup):
    doc = routing_setup["signals"]["test"]
    assert [q["question_id"] for q in doc["questions"]] == ["t0", "t1", "t2", "t3"]
    for q in doc["questions"]:
        assert q["divergence"] > 0 and 0 <= q["disagreement"] <= 1 and len(q["instruct_answers"]) == 2
    assert set(doc["seconds"]) == {"divergence", "disagreement"}


def test_routed_run_is_the_static_runs_picked_per_question(routing_setup, tmp_path):
    setup = routing_setup
    values = signal_values(setup["signals"]["test"], "divergence")
    middle = sorted(values.values())[1]
    router = Router("divergence", (0.5, 1.0), (middle,), calibration_questions=tuple(
        question_hash(q) for q in QUESTIONS["calibration"]), fit={"name": "hand"})
    assignment = router.assign(values)
    assert set(assignment.values()) == {0.5, 1.0}  # both λ used
    with GridBackends(setup["grid"], batch_size=1) as grid:
        run = routed_evaluate(router, grid, EvalTask(setup["files"]["test"], **SAMPLING), tmp_path / "routed",
                              values=values, progress=False)
        with pytest.raises(RouterError, match="used to calibrate"):  # calibration questions are refused
            routed_evaluate(router, grid, EvalTask(setup["files"]["calibration"], **SAMPLING), tmp_path / "refused",
                            values=signal_values(setup["signals"]["calibration"], "divergence"), progress=False)
    routed = _samples(run)
    assert len(routed) == 8
    for (qid, index), sample in routed.items():
        lam = assignment[qid]
        static = _samples(setup["static"][("test", lam)])[(qid, index)]
        assert sample["lambda"] == lam and sample["model"] == str(setup["grid"][lam])
        assert (sample["text"], sample["n_tokens"], sample["seed"]) == (static["text"], static["n_tokens"],
                                                                        static["seed"])
    metrics = load_run(run)["metrics"]
    assert metrics["lambda"] is None and metrics["label"] == "hand"
    shares = {b["lambda"]: b["questions"] for b in metrics["routing"]["by_lambda"]}
    assert shares == {lam: list(assignment.values()).count(lam) for lam in (0.5, 1.0)}
    assert metrics["routing"]["lambda_mean"] == pytest.approx(sum(assignment.values()) / 4)
    config = json.loads((run / "run.json").read_text())
    assert config["backend"]["name"] == "routed" and config["backend"]["router"]["signal"] == "divergence"
    assert set(config["backend"]["grid"]) == {"0.5", "1"}

    # the fleet: one server per λ, the same samples as the local routed run
    servers = {lam: CompletionServer(TransformersBackend(str(path))) for lam, path in setup["grid"].items()}
    shared_rng = threading.Lock()  # two servers in one process share torch's global RNG: one generate at a time
    for server in servers.values():
        server.generate_lock = shared_rng
        server.__enter__()
    try:
        urls = {lam: server.base_url for lam, server in servers.items()}
        with GridBackends(urls, batch_size=1, tokenizer_path=str(setup["grid"][1.0]),
                          http_options={"concurrency": 2, "retries": 1, "backoff": 0.05}) as fleet:
            remote = routed_evaluate(router, fleet, EvalTask(setup["files"]["test"], **SAMPLING), tmp_path / "fleet",
                                     values=values, progress=False)
        requests = {lam: len(server.requests) for lam, server in servers.items()}
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
    fleet_samples = _samples(remote)
    assert {k: (s["text"], s["n_tokens"], s["lambda"]) for k, s in fleet_samples.items()} == {
        k: (s["text"], s["n_tokens"], s["lambda"]) for k, s in routed.items()}
    # each λ its server: one probe of the run's decoding before generating (prepare), then its questions' samples
    assert requests == {lam: 1 + 2 * list(assignment.values()).count(lam) for lam in (0.5, 1.0)}
    assert set(json.loads((remote / "run.json").read_text())["server"]["grid"]) == {"0.5", "1"}
    assert {s["model"] for s in fleet_samples.values()} == set(urls.values())

    # report, stages and the frontier read a routed run
    report = write_report([setup["static"][("test", 0.5)], setup["static"][("test", 1.0)], run], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "routed (mean" in text and "Routed runs" in text and "Best static at ≤ tokens" in text
    assert (tmp_path / "report" / "frontier.png").stat().st_size > 0
    assert tmp_path / "report" / "frontier.png" in report["plots"]
    result = stages.analyse([str(setup["static"][("test", lam)]) for lam in (0.5, 1.0)] + [str(run)])
    (bench,) = result["benchmarks"]
    assert [p["lam"] for p in bench["points"]] == [0.5, 1.0]  # the routed run is not a point of the curve
    assert bench["routed"][0]["lambda_mean"] == metrics["routing"]["lambda_mean"]
    assert "routed" in stages.describe(result)
    stages.plot(result, str(tmp_path / "stages.png"))


def test_frontier_compares_with_the_best_static_at_no_more_tokens(routing_setup, tmp_path):
    setup = routing_setup
    runs = [load_run(setup["static"][("test", lam)]) for lam in (0.5, 1.0)]
    router = Router("divergence", (0.5, 1.0), (-math.inf,), fit={"name": "all_top"})  # every question at λ = 1
    with GridBackends(setup["grid"], batch_size=1) as grid:
        routed = load_run(routed_evaluate(router, grid, EvalTask(setup["files"]["test"], **SAMPLING), tmp_path / "top",
                                          values=signal_values(setup["signals"]["test"], "divergence"), progress=False))
    rows = {r["label"]: r for r in frontier_rows(runs + [routed])}
    assert rows["all_top"]["tokens"] == rows["mi_1"]["tokens"]  # the same samples as the static λ = 1 run
    best = rows["all_top"]["best_static"]
    cheaper = [r for r in rows.values() if r["kind"] == "static" and r["tokens"] <= rows["all_top"]["tokens"]]
    assert best["label"] == max(cheaper, key=lambda r: (r["mean"], -r["tokens"]))["label"]
    assert paired_difference(routed, runs[1])[:1] == (0.0,)
    answer = headline(list(rows.values()))
    assert answer["thinking"]["label"] == "mi_1"
    for candidate in answer["candidates"]:
        assert candidate["lambda"] < 1 and candidate["tokens"] < rows["mi_1"]["tokens"]
        assert candidate["within_one_se"] == (candidate["mean"] >= answer["floor"])


def test_profiles_and_windows_are_frontier_rows_at_their_mean_lambda(routing_setup, tmp_path):
    """A λ profile (a ramp over the layers) and a layer window are rows of kind ``profile``, placed
    at the parameter-weighted mean λ that their merge's mi_plan.json records (the estimators'
    definition, :func:`profiles.mean_lambda`), each against the best static λ at ≤ tokens."""
    from mi_mergekit.analysis import profiles
    from mi_mergekit.eval.frontier import write_frontier
    from mi_mergekit.merge.layout import CheckpointIndex
    from mi_mergekit.merge.placement import known_layout
    from mergekit.common import ModelReference
    from mergekit.options import MergeOptions

    setup = routing_setup
    instruct, thinking = setup["instruct"], setup["thinking"]
    ref = ModelReference.model_validate(instruct)
    layout = known_layout(ref)
    table = profiles.cells(layout, CheckpointIndex.read(ref, MergeOptions()).shapes)
    ramp = profiles.Profile.ramp(0.2, 1.0, layout.num_layers)
    models = {"ramp": profiles.profile_recipe(mi_config(instruct, thinking, 0.5), ramp, layout),
              "window": mi_config(instruct, thinking, 0.8, layer_start=1)}
    runs = [load_run(setup["static"][("test", lam)]) for lam in (0.5, 1.0)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, recipe in models.items():
            merge(recipe, tmp_path / name)
            runs.append(load_run(evaluate(tmp_path / name, EvalTask(setup["files"]["test"], **SAMPLING),
                                          out_dir=tmp_path / f"run_{name}", label=name,
                                          backend_options={"batch_size": 1}, progress=False)))
    finally:
        torch.set_num_threads(threads)
    plan = json.loads((tmp_path / "ramp" / "mi_plan.json").read_text())
    assert plan["lambda"] is None and plan["mean_lambda"] == pytest.approx(profiles.mean_lambda(ramp, table), abs=1e-5)
    window = json.loads((tmp_path / "window" / "mi_plan.json").read_text())
    # the window [1, 3]: layer 0 and the (tied) embeddings, which go with layer 0, keep Instruct
    shapes = CheckpointIndex.read(ref, MergeOptions()).shapes
    merged = sum(math.prod(s) for n, s in shapes.items()
                 if not n.startswith(("model.layers.0.", "model.embed_tokens.")))
    assert window["mean_lambda"] == pytest.approx(0.8 * merged / sum(math.prod(s) for s in shapes.values()), abs=1e-5)
    # a plan written before the mean was recorded: weighed by the first input's shapes, the same mean
    from mi_mergekit.eval.model_info import model_profile

    older = tmp_path / "older"
    older.mkdir()
    (older / "mi_plan.json").write_text(json.dumps({k: v for k, v in window.items() if k != "mean_lambda"}))
    assert model_profile(older)["mean_lambda"] == pytest.approx(window["mean_lambda"], abs=1e-5)
    rows = {r["label"]: r for r in frontier_rows(runs)}
    for name, source in (("ramp", plan), ("window", window)):
        row = rows[name]
        assert row["kind"] == "profile" and row["lambda"] == pytest.approx(source["mean_lambda"])
        assert row["range"] == (min(t["lambda"] for t in source["tensors"]), max(t["lambda"] for t in source["tensors"]))
        cheaper = [r for r in rows.values() if r["kind"] == "static" and r["tokens"] <= row["tokens"]]
        if cheaper:
            best = max(cheaper, key=lambda r: (r["mean"], -r["tokens"]))
            assert row["best_static"]["label"] == best["label"]
            assert row["best_static"]["delta"] == pytest.approx(paired_difference(row["run"], best["run"])[0])
        else:
            assert row["best_static"] is None
    written = write_frontier(runs, tmp_path / "report")
    with (tmp_path / "report" / "frontier.csv").open() as handle:
        kinds = {r["Run"]: (r["Kind"], r["λ"]) for r in csv.DictReader(handle)}
    assert kinds["ramp"] == ("profile", f"mean {plan['mean_lambda']:.2f} (0.20–1.00)")
    assert kinds["mi_0.5"] == ("static", "0.5") and written


def test_route_commands_fit_and_eval(routing_setup, tmp_path):
    """`mi-mergekit route fit` on the calibration runs, `route eval` computing the test signals first."""
    from common import console, run

    setup = routing_setup
    signals = tmp_path / "calibration-signals.json"
    signals.write_text(json.dumps(setup["signals"]["calibration"]))
    router = tmp_path / "router.json"
    fitted = run([console("mi-mergekit"), "route", "fit", "--signals", str(signals), "--signal", "disagreement",
                  "--run", f"0.5={setup['static'][('calibration', 0.5)]}",
                  "--run", f"1={setup['static'][('calibration', 1.0)]}", "--out", str(router)],
                 env={"OMP_NUM_THREADS": "1"})
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    doc = json.loads(router.read_text())
    assert doc["signal"] == "disagreement" and doc["grid"] == [0.5, 1.0] and len(doc["calibration_questions"]) == 4
    routed = run([console("mi-mergekit"), "route", "eval", "--router", str(router), "--model",
                  f"0.5={setup['grid'][0.5]}", "--model", f"1={setup['grid'][1.0]}", "--instruct", str(setup["instruct"]),
                  "--thinking", str(setup["thinking"]), "-n", "2", "--max-new-tokens", "4", "--seed", "3",
                  "--batch-size", "1", "--dataset", str(setup["files"]["test"]), "--out", str(tmp_path / "routed")],
                 env={"OMP_NUM_THREADS": "1"})
    assert routed.returncode == 0, routed.stderr[-2000:]
    assert "mean λ" in routed.stdout and (tmp_path / "routed.signals.json").exists()
    samples = _samples(tmp_path / "routed")
    assert len(samples) == 8 and all(s["lambda"] in (0.5, 1.0) for s in samples.values())


def test_find_lambda_targets_a_routed_grid(routing_setup, tmp_path):
    """find-lambda --route searches the router's knob: 0 routes every question to the lowest λ, 1 to the highest."""
    import yaml

    from common import console, run

    setup = routing_setup
    values = sorted(signal_values(setup["signals"]["calibration"], "divergence").values())
    router = Router("divergence", (0.5, 1.0), ((values[1] + values[2]) / 2,), calibration_values=tuple(values),
                    fit={"name": "calibrated"})
    router.save(tmp_path / "router.json")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(setup["instruct"], setup["thinking"], lam=0.5)))
    out = tmp_path / "search"
    result = run([console("mi-mergekit"), "find-lambda", str(recipe), "--dataset",
                  str(setup["files"]["calibration"]), "--out", str(out), "--route", str(tmp_path / "router.json"),
                  "--target", "tokens<=1000", "--grid", "3", "--max-probes", "3", "-n", "2", "--max-new-tokens", "3",
                  "--batch-size", "2", "--device", "cpu"], env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["searched"] == "routing knob" and [p["lam"] for p in doc["probes"]] == [0.0, 0.5, 1.0]
    for knob, expected in ((0.0, {0.5}), (1.0, {1.0}), (0.5, {0.5, 1.0})):
        lambdas = {s["lambda"] for s in _samples(out / "runs" / f"route_{knob:g}").values()}
        assert lambdas == expected, knob
    assert doc["best"]["metrics"]["lambda_mean"] is not None and (out / "router.json").exists()
    assert not (out / "models").exists() or not any((out / "models").iterdir())  # merges dropped after the search


def test_route_eval_takes_its_backends_from_the_grid(tmp_path):
    """`route eval` shares `eval`'s options, but each λ's --model sets its backend: --backend/--base-url refused."""
    from common import console, run

    (tmp_path / "router.json").write_text("{}")
    result = run([console("mi-mergekit"), "route", "eval", "--router", str(tmp_path / "router.json"), "--model",
                  "1=http://127.0.0.1:9/v1", "--dataset", "t.jsonl", "--out", str(tmp_path / "r"), "--backend",
                  "openai", "--base-url", "http://127.0.0.1:9/v1"])
    assert result.returncode == 2 and "leave out --backend and --base-url" in result.stderr
    assert not (tmp_path / "r").exists()


def test_served_model_names_one_for_all_or_one_per_lambda():
    from mi_mergekit.eval.backends.routed import RoutingError
    from mi_mergekit.routing.run import parse_served_models

    fleet = {0.4: "http://a:8000/v1", 1.0: "http://b:8000/v1"}
    assert parse_served_models(None, fleet) is None
    assert parse_served_models("merged", fleet) == {0.4: "merged", 1.0: "merged"}
    assert parse_served_models("0.4=/m/mi_0.4, 1=/m/mi_1", fleet) == {0.4: "/m/mi_0.4", 1.0: "/m/mi_1"}
    with pytest.raises(RoutingError, match=r"missing \['1'\]"):
        parse_served_models("0.4=/m/mi_0.4", fleet)
    with pytest.raises(RoutingError, match=r"not in the grid \['0.6'\]"):
        parse_served_models("0.4=a,1=b,0.6=c", fleet)
    with pytest.raises(RoutingError, match="--served-model: .*given twice"):
        parse_served_models("0.4=a,0.4=b", fleet)
    assert parse_served_models("1=b", {0.4: "models/mi_0.4", 1.0: "http://b:8000/v1"}) == {1.0: "b"}  # local λ: no name
