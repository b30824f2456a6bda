"""The learned agents: replay buffer, time-aware n-step returns, the diffusion chain,
the attention encoder's permutation behaviour, checkpoints, resume, determinism, a
short training run, generalisation to a larger cluster, the Ray matrix and the entry
point (tiny budgets throughout, CleanRL's smoke-test habit)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from eat.evaluation.runner import run_episode, scheduler_rng
from eat.params import ParamsError, load_params, validate_params
from eat.schedulers.rl import SB3_AGENTS
from eat.schedulers.rl.actors import make_actor
from eat.schedulers.rl.agent import RLScheduler, load_actor, load_scheduler, save_actor
from eat.schedulers.rl.diffusion import DDPMScheduler, make_betas
from eat.schedulers.rl.networks import (
    AttentionCritic,
    NetworkSpec,
    TokenLayout,
    flat_to_tokens,
    tokens_to_flat,
)
from eat.schedulers.rl.sac import NStepAccumulator, ReplayBuffer, Transition
from eat.sim.encoding import N_FEATURES, Encoder
from eat.sim.env import EdgeClusterEnv
from eat.sim.simulator import Simulator, episode_rngs, make_tasks
from eat.training.loop import (
    RESUME_FILE,
    RunInterrupted,
    demonstrate,
    make_teacher,
    resolve_runs,
    train_run,
    training_env,
    validate,
    validation_scores,
    write_run,
)
from eat.training.matrix import demonstration_sets, resolve_matrix, run_matrix
from eat.training.sb3 import resolve_sb3_runs
from tests.conftest import REPO, tweak

torch.set_num_threads(1)

TINY = {
    "width": 16,
    "heads": 2,
    "hidden": 16,
    "batch_size": 32,
    "total_steps": 120,
    "eval_every": 60,
    "demo_episodes": 3,
    "bc_updates": 40,
    "critic_warmup_updates": 10,
    "dagger_rounds": 1,
    "dagger_episodes": 1,
    "dagger_updates": 20,
    "learning_starts": 30,
    "updates_per_step": 0.5,
    "buffer_size": 5000,
}


def tiny_spec(params, agent="eat", preset="paper", seed=0, **changes):
    spec = next(
        s
        for s in resolve_runs(params, include_ablation=False)
        if s.agent == agent and s.preset_name == preset and s.config.seed == seed
    )
    spec.config = spec.config.model_validate(
        {**spec.config.model_dump(), "device": "cpu", **TINY, **changes}
    )
    spec.validation_seeds = spec.validation_seeds[:1]
    spec.rates = spec.rates[:2]
    if preset == "edge":
        spec.preset = tweak(spec.preset, workload={"total_tasks": 20})
    return spec


def observation(preset, rate=0.05, seed=0):
    env = EdgeClusterEnv(preset, rate)
    obs, info = env.reset(seed=seed)
    return env, obs, info


# ---------------------------------------------------------------------------
# Replay buffer and n-step targets
# ---------------------------------------------------------------------------


def transition(value: float, size: int = 3) -> Transition:
    obs = np.full((2, 2), value, np.float32)
    vector = np.full(size, value, np.float32)
    return Transition(obs, vector, vector, None, value, 0.5, obs + 1, vector, False)


def test_replay_buffer_wraps_fifo_and_samples_named_tensors():
    buffer = ReplayBuffer(4, (2, 2), 3, np.random.default_rng(0))
    for value in range(6):
        buffer.add(transition(float(value)))
    assert len(buffer) == 4
    assert sorted(buffer.reward.tolist()) == [2.0, 3.0, 4.0, 5.0]  # 0 and 1 overwritten
    batch = buffer.sample(8, "cpu")
    assert batch.obs.shape == (8, 2, 2) and batch.action.shape == (8, 3)
    assert set(batch.reward.tolist()) <= {2.0, 3.0, 4.0, 5.0}
    assert torch.all(batch.next_obs == batch.obs + 1)
    assert torch.all(batch.has_demo == 0)
    # Demonstrations are clipped so that tanh pre-activations stay finite.
    buffer.add(transition(0.0)._replace(demo=np.array([1.0, -1.0, 0.3], np.float32)))
    assert buffer.demo[(buffer.position - 1) % 4].tolist() == pytest.approx([0.95, -0.95, 0.3])


def test_replay_buffer_state_round_trip():
    buffer = ReplayBuffer(5, (2, 2), 3, np.random.default_rng(1))
    for value in range(3):
        buffer.add(transition(float(value)))
    state = buffer.state_dict()
    other = ReplayBuffer(5, (2, 2), 3, np.random.default_rng(99))
    other.load_state_dict(state)
    assert torch.equal(buffer.sample(6, "cpu").reward, other.sample(6, "cpu").reward)


def push(acc, reward, time, next_time, terminated=False, truncated=False):
    obs = np.zeros((1, 1), np.float32)
    mask = np.ones(1, np.float32)
    return acc.push(
        obs, mask, mask, None, reward, time, obs, mask, next_time, terminated, truncated
    )


def test_nstep_discounts_by_elapsed_simulated_time():
    acc = NStepAccumulator(n_step=3, gamma=0.5, discount_time_s=10.0)
    assert push(acc, 1.0, 0.0, 10.0) == []
    assert push(acc, 2.0, 10.0, 10.0) == []  # a second decision at the same instant
    (first,) = push(acc, 4.0, 10.0, 30.0)
    # rewards at t = 0, 10, 10 from t0 = 0: 1 + 0.5 * 2 + 0.5 * 4; bootstrap at t = 30
    assert first.reward == pytest.approx(1 + 0.5 * 2 + 0.5 * 4)
    assert first.discount == pytest.approx(0.5**3)
    assert not first.done
    (second,) = push(acc, 8.0, 30.0, 35.0)
    # from t0 = 10: 2 + 4 (same time) + 0.5^2 * 8; bootstrap at 35: 0.5^2.5
    assert second.reward == pytest.approx(2 + 4 + 0.25 * 8)
    assert second.discount == pytest.approx(0.5**2.5)


def test_nstep_termination_flushes_without_bootstrap_and_truncation_with():
    acc = NStepAccumulator(n_step=3, gamma=0.5, discount_time_s=10.0)
    push(acc, 1.0, 0.0, 10.0)
    ready = push(acc, 2.0, 10.0, 20.0, terminated=True)
    assert [t.done for t in ready] == [True, True]
    assert [t.reward for t in ready] == pytest.approx([1 + 0.5 * 2, 2.0])
    acc = NStepAccumulator(n_step=3, gamma=0.5, discount_time_s=10.0)
    push(acc, 1.0, 0.0, 10.0)
    ready = push(acc, 2.0, 10.0, 20.0, truncated=True)
    assert [t.done for t in ready] == [False, False]
    assert [t.discount for t in ready] == pytest.approx([0.25, 0.5])


# ---------------------------------------------------------------------------
# Diffusion chain
# ---------------------------------------------------------------------------


def test_ddpm_schedule_and_step_shapes():
    scheduler = DDPMScheduler(10, "linear", 1e-4, 2e-2)
    assert scheduler.betas[0].item() == pytest.approx(1e-4)
    assert scheduler.betas[-1].item() == pytest.approx(2e-2)
    assert torch.all(scheduler.alphas_cumprod[1:] < scheduler.alphas_cumprod[:-1])
    assert scheduler.timesteps == list(range(9, -1, -1))
    x = torch.randn(4, 7, 3)
    noisy = scheduler.add_noise(x, torch.randn_like(x), 5)
    out = scheduler.step(torch.zeros_like(x), 5, noisy, torch.randn_like(x))
    assert out.prev_sample.shape == x.shape and out.pred_original_sample.abs().max() <= 1.0
    # Deterministic step (no noise) and t = 0 add no noise.
    a = scheduler.step(torch.ones_like(x), 0, x, torch.randn_like(x)).prev_sample
    b = scheduler.step(torch.ones_like(x), 0, x, None).prev_sample
    assert torch.equal(a, b)
    for schedule in ("cosine", "vp"):
        betas = make_betas(schedule, 10, 1e-4, 2e-2)
        assert torch.all((betas > 0) & (betas < 1))
    with pytest.raises(ValueError, match="beta_schedule 'square' is not supported; choose one of"):
        make_betas("square", 10, 1e-4, 2e-2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must equal num_train_timesteps"):
        scheduler.set_timesteps(5)


def small_actor(env, obs, actor, encoder, *, layers: int = 1, denoising_steps: int = 1):
    """A width-16 actor for ``env``'s observation and action shapes."""
    spec = NetworkSpec(
        encoder=encoder,
        actor=actor,
        width=16,
        heads=2,
        layers=layers,
        hidden=16,
        denoising_steps=denoising_steps,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=2e-2,
    )
    return make_actor(spec, obs.shape[0], obs.shape[1], env.action_space.shape[0])


@pytest.mark.parametrize("encoder", ["attention", "mlp"])
@pytest.mark.parametrize("steps", [1, 10])
def test_diffusion_actor_log_probs_finite_and_deterministic_mode(paper, encoder, steps):
    env, obs, info = observation(paper)
    obs_t = torch.as_tensor(obs).unsqueeze(0).repeat(5, 1, 1)
    mask = torch.as_tensor(info["action_mask"], dtype=torch.float32).unsqueeze(0).repeat(5, 1)
    actor = small_actor(env, obs, "diffusion", encoder, denoising_steps=steps)
    out = actor(obs_t, mask)
    assert out.action.shape == (5, env.action_space.shape[0])
    assert torch.all(out.action.abs() <= 1) and torch.all(torch.isfinite(out.log_prob))
    out.log_prob.sum().backward()  # gradients flow through the chain
    assert actor.denoiser.sample_in.weight.grad is not None
    # Sampled actions differ across the batch; deterministic ones do not, and do not
    # depend on the global random state.
    assert not torch.allclose(out.action[0], out.action[1])
    torch.manual_seed(1)
    first = actor(obs_t, mask, deterministic=True)
    torch.manual_seed(2)
    second = actor(obs_t, mask, deterministic=True)
    assert torch.equal(first.action, second.action)
    assert torch.allclose(first.action[0], first.action[4])
    assert torch.equal(first.action, first.mean_action)


def test_log_prob_ignores_masked_slots(paper):
    env, obs, _info = observation(paper)
    actor = small_actor(env, obs, "gaussian", "attention")
    obs_t = torch.as_tensor(obs).unsqueeze(0)
    ones = torch.ones(1, env.action_space.shape[0])
    zeros = torch.zeros_like(ones)
    torch.manual_seed(0)
    full = actor(obs_t, ones).log_prob
    torch.manual_seed(0)
    none = actor(obs_t, zeros).log_prob
    assert none.item() == 0.0 and full.item() != 0.0


# ---------------------------------------------------------------------------
# Attention encoder: token layout and permutation behaviour over server tokens
# ---------------------------------------------------------------------------


def test_token_layout_round_trip(edge):
    _env, obs, _ = observation(edge, rate=1.0)
    layout = TokenLayout.of(torch.as_tensor(obs).unsqueeze(0))
    assert layout == TokenLayout(edge.queue_window, edge.n_servers)
    flat = torch.randn(2, layout.action_size)
    assert torch.equal(tokens_to_flat(flat_to_tokens(flat, layout), layout), flat)


def permuted(obs: np.ndarray, window: int, perm: list[int]) -> np.ndarray:
    out = obs.copy()
    out[window : window + len(perm)] = obs[window + np.array(perm)]
    return out


@pytest.mark.parametrize("actor_kind", ["gaussian", "diffusion"])
def test_attention_actor_is_permutation_equivariant_over_servers(edge, actor_kind):
    env, obs, _info = observation(edge, rate=1.0)
    window, servers = edge.queue_window, edge.n_servers
    actor = small_actor(env, obs, actor_kind, "attention", layers=2, denoising_steps=3).eval()
    perm = list(np.random.default_rng(0).permutation(servers))
    with torch.no_grad():
        a = actor(torch.as_tensor(obs)[None], None, deterministic=True).action[0]
        b = actor(torch.as_tensor(permuted(obs, window, perm))[None], None, deterministic=True)
    b = b.action[0]
    base = 3 + window
    torch.testing.assert_close(b[:base], a[:base], atol=1e-5, rtol=1e-5)  # global and tasks
    torch.testing.assert_close(b[base:], a[base:][perm], atol=1e-5, rtol=1e-5)  # servers permute


def test_attention_critic_is_permutation_invariant_over_servers(edge):
    env, obs, _info = observation(edge, rate=1.0)
    window, servers = edge.queue_window, edge.n_servers
    critic = AttentionCritic(obs.shape[1], 16, 2, 1, 16)
    action = torch.rand(1, env.action_space.shape[0]) * 2 - 1
    mask = torch.ones_like(action)
    perm = list(np.random.default_rng(1).permutation(servers))
    base = 3 + window
    permuted_action = action.clone()
    permuted_action[0, base:] = action[0, base:][perm]
    layout = TokenLayout(window, servers)
    q = critic(torch.as_tensor(obs)[None], action, mask, layout)
    q_perm = critic(
        torch.as_tensor(permuted(obs, window, perm))[None], permuted_action, mask, layout
    )
    for x, y in zip(q, q_perm, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------
# Checkpoints, resume, determinism, learning
# ---------------------------------------------------------------------------


def test_checkpoint_save_load_gives_identical_actions(paper, tmp_path, params):
    spec = tiny_spec(params)
    _env, obs, _ = observation(paper)
    from eat.schedulers.rl.agent import build_actor

    shapes = {"n_tokens": obs.shape[0], "in_features": obs.shape[1], "action_size": 17}
    actor = build_actor(spec.config, shapes)
    save_actor(tmp_path, actor, spec.config, shapes, agent="eat", preset="paper")
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["sac"]["denoising_steps"] == spec.config.denoising_steps
    assert record["shapes"] == shapes and record["agent"] == "eat"
    loaded, _ = load_actor(tmp_path)
    obs_t = torch.as_tensor(obs)[None]
    with torch.no_grad():
        assert torch.equal(
            actor.eval()(obs_t, None, deterministic=True).action,
            loaded(obs_t, None, deterministic=True).action,
        )
    with pytest.raises(FileNotFoundError, match="not an eat checkpoint"):
        load_actor(tmp_path / "missing")


@pytest.fixture(scope="module")
def trained_paper(params):
    """One tiny eat run on paper (shared by several tests)."""
    return train_run(tiny_spec(params))


def test_training_is_deterministic_for_a_seed(params, trained_paper):
    again = train_run(tiny_spec(params))
    for name, tensor in trained_paper.actor_state.items():
        assert torch.equal(tensor, again.actor_state[name]), name
    assert trained_paper.curves.equals(again.curves)


def test_resume_after_interruption_equals_uninterrupted(params, tmp_path):
    spec = tiny_spec(params, init="scratch", bc_weight=0.0, total_steps=150, eval_every=50)
    straight = train_run(spec)
    with pytest.raises(RunInterrupted, match="run again to resume"):
        train_run(spec, checkpoint_dir=tmp_path, stop_after_episodes=2)
    assert (tmp_path / "resume.pt").exists()
    # a checkpoint is resumed only by the run that wrote it
    other = tiny_spec(
        params, init="scratch", bc_weight=0.0, total_steps=150, eval_every=50, tau=0.01
    )
    with pytest.raises(
        ValueError, match=r"checkpoint of another run \(it differs in \['config'\]\)"
    ):
        train_run(other, checkpoint_dir=tmp_path)
    resumed = train_run(spec, checkpoint_dir=tmp_path)
    assert not (tmp_path / "resume.pt").exists()  # a finished run removes its checkpoint
    for name, tensor in straight.actor_state.items():
        assert torch.equal(tensor, resumed.actor_state[name]), name
    columns = [c for c in straight.curves.columns if c.startswith("val/")]
    assert straight.curves[columns].equals(resumed.curves[columns])


def test_validation_leaves_the_actor_in_training_mode(params, paper):
    # An actor left in eval mode after validation trains on other numerics (the
    # attention fast path) than one restored from a checkpoint: resume would diverge.
    spec = tiny_spec(params)
    env, obs, _ = observation(paper)
    actor = small_actor(env, obs, "diffusion", "attention")
    validate(actor, spec, "cpu")
    assert actor.training
    actor.eval()
    validate(actor, spec, "cpu")
    assert not actor.training


def test_short_training_improves_on_the_initial_policy(params, trained_paper):
    spec = trained_paper.spec
    from eat.schedulers.rl.agent import build_actor

    torch.manual_seed(spec.config.seed)
    initial = validate(build_actor(spec.config, trained_paper.shapes), spec, "cpu")
    final = trained_paper.summary
    assert final["val_reward"] > initial["val/reward"] + 0.3
    assert list(dict.fromkeys(trained_paper.curves["phase"])) == ["bc", "dagger1", "sac"]


def test_warm_start_records_what_each_phase_adds(trained_paper):
    """Demonstrations and every DAgger round are labelled by the teacher (the rollout
    planner), each phase is validated, and the summary names the phase it selected."""
    summary = trained_paper.summary
    assert trained_paper.spec.teacher == "rollout"
    assert summary["teacher_labels"] == summary["warm_start_decisions"] > 0
    curves = trained_paper.curves.set_index("phase")
    assert summary["bc_val_reward"] == curves.loc["bc", "val/reward"]
    assert summary["dagger1_val_reward"] == curves.loc["dagger1", "val/reward"]
    assert summary["sac_val_reward"] == curves.loc["sac", "val/reward"].max()
    assert summary["val_reward"] == max(
        summary["bc_val_reward"], summary["dagger1_val_reward"], summary["sac_val_reward"]
    )
    best = {"bc": "bc_val_reward", "dagger1": "dagger1_val_reward", "sac": "sac_val_reward"}
    assert summary[best[summary["best_phase"]]] == summary["val_reward"]
    # labels grow through the phases: a DAgger round adds the learner's own states
    labels = trained_paper.curves.drop_duplicates("phase").set_index("phase")["labels"]
    assert labels["dagger1"] > labels["bc"] > 0


def test_resume_after_the_warm_start_equals_uninterrupted(params, tmp_path):
    """The warm start (demonstrations, DAgger) ends with a checkpoint: a run interrupted
    in SAC after it resumes without repeating it and ends as an uninterrupted one."""
    spec = tiny_spec(params, total_steps=90, eval_every=45)
    straight = train_run(spec)
    with pytest.raises(RunInterrupted):
        train_run(spec, checkpoint_dir=tmp_path, stop_after_episodes=1)
    resumed = train_run(spec, checkpoint_dir=tmp_path)
    for name, tensor in straight.actor_state.items():
        assert torch.equal(tensor, resumed.actor_state[name]), name
    assert straight.summary["teacher_labels"] == resumed.summary["teacher_labels"]
    columns = [c for c in straight.curves.columns if c.startswith("val/")]
    assert straight.curves[columns].equals(resumed.curves[columns])


def test_decision_loss_scores_what_the_action_decodes_to():
    from eat.schedulers.rl.networks import TokenLayout
    from eat.schedulers.rl.sac import decision_loss

    layout = TokenLayout(window=3, servers=2)  # action: gate, steps, gang, 3 slots, 2 servers
    demo = torch.tensor([[0.95, 0.2, -0.5, -0.95, 0.95, -0.95, 0.95, -0.95]])
    mask = torch.tensor([[1.0, 1, 1, 1, 1, 0, 1, 1]])  # slot 2 cannot start now

    def loss(mean: list[float]) -> float:
        return float(decision_loss(torch.tensor([mean]), demo, mask, layout))

    base = [2.0, float(np.arctanh(0.2)), float(np.arctanh(-0.5)), 0.0, 1.0, 0.0, 1.0, -1.0]
    # a larger margin for the teacher's slot and servers lowers the loss
    assert loss([*base[:4], 3.0, *base[5:]]) < loss(base)
    assert loss([*base[:6], 3.0, -3.0]) < loss(base)
    # a slot that cannot be dispatched does not count, however high its score
    assert loss([*base[:5], 50.0, *base[6:]]) == pytest.approx(loss(base))
    # steps off target cost; gate on the wrong side costs
    assert loss([base[0], 1.5, *base[2:]]) > loss(base)
    assert loss([-2.0, *base[1:]]) > loss(base)
    # a teacher that waits: only the gate matters
    wait = torch.full_like(demo, -0.95)
    assert float(
        decision_loss(torch.tensor([[-3.0, 5, 5, 5, -5, 5, 5, 5]]), wait, mask, layout)
    ) == (pytest.approx(float(F.softplus(torch.tensor(-3.0)))))


def test_policy_trained_on_4_servers_runs_on_8(params, trained_paper, tmp_path):
    write_run(trained_paper, tmp_path)
    scheduler = load_scheduler(tmp_path / "paper" / "eat" / "seed0")
    bigger = tweak(
        params.env.paper,
        servers=[{"gpu": "reference", "count": 8}],
        allowed_gang_sizes=[1, 2, 4, 8],
        queue_window=12,
        workload={"gang_sizes": [1, 2, 4, 8], "total_tasks": 20},
    )
    assert Simulator(bigger).n_servers == 8
    result = run_episode(bigger, scheduler, 0.05, seed=1000)
    assert len(result.tasks) == 20
    assert set(result.segments["server"]) - set(range(4))  # servers 4-7 were used


def test_an_mlp_policy_refuses_a_cluster_of_another_size(params, tmp_path):
    """The MLP agents read a flat observation of fixed size: another cluster is refused
    with what the network was trained for and what it was given, not a shape error."""
    preset = params.env.paper
    env = EdgeClusterEnv(preset, 0.05)
    obs, _ = env.reset(seed=0)
    actor = small_actor(env, obs, "gaussian", "mlp")
    scheduler = RLScheduler(actor, "sac", trained_on="paper")
    assert len(run_episode(preset, scheduler, 0.05, seed=1000).tasks) == 32  # its own cluster
    bigger = tweak(preset, servers=[{"gpu": "reference", "count": 8}])
    slots = preset.model_slots
    with pytest.raises(
        ValueError,
        match=rf"'sac' has an MLP encoder .* trained on preset 'paper' for {slots} model slot\(s\) and 15 tokens.*this simulator has 1 model\(s\) and 19 tokens \(window 10 \+ 8 servers",
    ):
        run_episode(bigger, scheduler, 0.05, seed=1000)
    # more models than the network's model slots (v3: the width is the slot count, so
    # fewer models than slots, or as many, are read)
    spec = {"memory_gb": 4.0, "profile_model": "sd15"}
    models = {"sd14": spec, **{f"sd14_v{i}": spec for i in range(1, slots + 1)}}
    too_many = tweak(preset, models=models, model_slots=slots + 1)
    attention = RLScheduler(small_actor(env, obs, "gaussian", "attention"), "eat")
    with pytest.raises(
        ValueError,
        match=rf"attention encoder trained for {slots} model slot\(s\); this simulator has {slots + 1} model\(s\)",
    ):
        run_episode(too_many, attention, 0.05, seed=1000)
    as_many = tweak(preset, models=dict(list(models.items())[:slots]))
    assert len(run_episode(as_many, attention, 0.05, seed=1000).tasks) == 32


def test_a_network_reads_with_its_own_slot_count_whatever_the_preset_says(edge):
    """A checkpoint built for 2 model slots (the v2 width of edge, one per model) runs on
    a preset whose observation has 8: the scheduler encodes with the network's count."""
    narrow = tweak(edge, model_slots=2, workload={"total_tasks": 12})
    env = EdgeClusterEnv(narrow, 1.0)
    obs, _ = env.reset(seed=0)
    assert obs.shape[1] == N_FEATURES + 2
    scheduler = RLScheduler(small_actor(env, obs, "gaussian", "attention"), "eat")
    wide = tweak(narrow, model_slots=8)
    assert scheduler.model_slots == 2
    assert scheduler.misfit(Simulator(wide)) is None
    assert len(run_episode(wide, scheduler, 1.0, seed=1000).tasks) == 12
    assert scheduler.encoder(Simulator(wide)).n_features == N_FEATURES + 2


def test_rl_scheduler_decisions_are_valid_on_edge(params):
    spec = tiny_spec(params, preset="edge", total_steps=60, eval_every=60)
    result = train_run(spec)
    from eat.schedulers.rl.agent import build_actor

    actor = build_actor(spec.config, result.shapes)
    actor.load_state_dict(result.actor_state)
    scheduler = RLScheduler(actor, "eat")
    episode = run_episode(spec.preset, scheduler, 1.0, seed=1000)
    assert len(episode.tasks) == 20
    encoder_sim = Simulator(spec.preset)
    assert Encoder(encoder_sim).action_size == result.shapes["action_size"]


def test_a_checkpoint_decides_with_the_completion_it_was_trained_with(params, tmp_path):
    spec = tiny_spec(
        params, preset="edge", completion="immediate_reward", total_steps=60, eval_every=60
    )
    result = train_run(spec)
    scheduler = load_scheduler(write_run(result, tmp_path))
    assert scheduler.completion_name == "immediate_reward"
    # loaded anywhere, the output policy scores what the run's validation said it does
    best = result.curves["val/reward"].max()
    deployed = validation_scores(spec.preset, scheduler, spec.rates, spec.validation_seeds)
    assert deployed["val/reward"] == best
    # and the same weights with every part of the dispatch decoded decide otherwise
    decoded = RLScheduler(scheduler.actor, "eat", completion="learned")
    plain = validation_scores(spec.preset, decoded, spec.rates, spec.validation_seeds)
    assert plain["val/reward"] != best
    # every dispatch keeps the policy's wait-or-dispatch and task, on the best gang and steps
    sim = Simulator(spec.preset)
    tasks = make_tasks(sim, 1.0, episode_rngs(1000)[0])
    sim.reset(tasks, episode_rngs(1000)[1])
    sim.advance()
    scheduler.reset(sim, np.random.default_rng(0))
    decoded.reset(sim, np.random.default_rng(0))
    checked = 0
    while not sim.done and checked < 20:
        own, completed = decoded.decide(sim), scheduler.decide(sim)
        assert (own is None) == (completed is None)
        if completed is None:
            sim.wait()
            continue
        assert completed.task_id == own.task_id
        assert sim.preview(completed).reward >= sim.preview(own).reward - 1e-9
        sim.dispatch(completed)
        sim.advance()
        checked += 1
    assert checked > 0


def test_an_old_checkpoint_format_is_refused(params, tmp_path):
    spec = tiny_spec(params)
    _env, obs, _ = observation(params.env.paper)
    from eat.schedulers.rl.agent import build_actor

    shapes = {"n_tokens": obs.shape[0], "in_features": obs.shape[1], "action_size": 17}
    save_actor(
        tmp_path, build_actor(spec.config, shapes), spec.config, shapes, agent="eat", preset="paper"
    )
    record = json.loads((tmp_path / "config.json").read_text())
    record["format"] = 1
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="format 1 is not supported; expected 2"):
        load_scheduler(tmp_path)


# ---------------------------------------------------------------------------
# Params, the matrix and the entry point
# ---------------------------------------------------------------------------


def test_params_reject_unknown_and_untrained_agents():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"]["optimum"] = None  # its schedulers must be among evaluate.schedulers
    raw["evaluate"]["schedulers"] = ["random", "clairvoyant", "dqn"]
    with pytest.raises(
        ParamsError,
        match=r"evaluate\.schedulers\.2: .*'eat', 'd2sac', 'sac', 'ppo' or 'maskable_ppo' \(got 'dqn'\)",
    ):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["agents"] = ["eat"]
    raw["evaluate"]["optimum"] = None
    raw["evaluate"]["schedulers"] = ["random", "clairvoyant", "sac"]
    with pytest.raises(ParamsError, match=r"which train\.agents does not train"):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["agents"] = ["eat", "sac", "eat"]
    with pytest.raises(ParamsError, match=r"agents lists \['eat'\] more than once"):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["agreement"] = ["d2sac"]
    raw["train"]["agents"] = ["eat", "sac"]
    raw["evaluate"]["schedulers"] = [s for s in raw["evaluate"]["schedulers"] if s != "d2sac"]
    with pytest.raises(ParamsError, match=r"agreement names \['d2sac'\], which agents does not"):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["init"] = "imitation"
    with pytest.raises(ParamsError, match=r"train\.init: .*'scratch'.*'bc'"):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"]["schedulers"] = [*raw["evaluate"]["schedulers"], "greedy"]
    with pytest.raises(ParamsError, match=r"schedulers lists \['greedy'\] more than once"):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"] |= {"init": "scratch", "bc_weight": 0.0}
    raw["train"]["teacher"]["edge"] = None  # nothing to agree with on edge
    with pytest.raises(ParamsError, match=r"presets \['edge'\] have none"):
        validate_params(raw)
    raw["train"]["agreement"] = []
    validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["completion"] = {"paper": "learned", "edge": "greedy", "metro": "learned"}
    with pytest.raises(ParamsError, match=r"completion.*'learned' or 'immediate_reward'"):
        validate_params(raw)


def test_run_specs_cover_the_matrix_and_ablation(params):
    specs = resolve_runs(params)
    train = params.train
    main = [s for s in specs if s.agent in train.agents and s.preset_name in train.presets]
    sac_agents = [agent for agent in train.agents if agent not in SB3_AGENTS]
    assert len(main) == len(sac_agents) * len(train.presets) * train.n_seeds >= 5 * 3
    sb3_runs = resolve_sb3_runs(params)  # the third-party learners, beside these
    assert (
        len(sb3_runs) == (len(train.agents) - len(sac_agents)) * len(train.presets) * train.n_seeds
    )
    scaled = [s for s in specs if s.preset_name == train.scale.preset]
    assert len(scaled) == len(train.scale.agents) * train.scale.n_seeds
    assert {s.preset.workload.total_tasks for s in scaled} == {train.scale.tasks}
    eat = next(s for s in main if s.agent == "eat")
    assert (eat.config.encoder, eat.config.actor) == ("attention", "diffusion")
    sac = next(s for s in main if s.agent == "sac")
    assert (sac.config.encoder, sac.config.actor) == ("mlp", "gaussian")
    ablation = [s for s in specs if s.agent not in train.agents]
    assert {s.agent for s in ablation} == set(train.ablation.variants)
    # Training episodes never use validation or test workloads.
    assert not set(params.seeds.train) & (set(params.seeds.validation) | set(params.seeds.test))


def test_ray_matrix_trains_the_same_models_as_a_serial_run(params, tmp_path):
    """The Ray matrix (runs in parallel worker processes, in whatever order they start and
    report) writes model folders byte for byte equal to a serial run in this process."""
    specs = [
        tiny_spec(params, agent=agent, total_steps=40, eval_every=40, bc_updates=10)
        for agent in ("eat", "sac")
    ]
    summaries = run_matrix(
        specs, tmp_path / "ray", parallel="ray", ray_address=None, num_cpus=2, progress=False
    )
    assert [s["agent"] for s in summaries] == ["eat", "sac"]
    # one demonstration set, played once for both runs
    assert summaries[0]["demonstrations_s"] == summaries[1]["demonstrations_s"] > 0
    run_matrix(
        specs,
        tmp_path / "serial",
        parallel="serial",
        ray_address=None,
        num_cpus=None,
        progress=False,
    )
    for agent in ("eat", "sac"):
        directory = tmp_path / "ray" / "paper" / agent / "seed0"
        assert (directory / "actor.pt").exists() and (directory / "curves.csv").exists()
        load_scheduler(directory)
        for name in ("actor.pt", "config.json", "curves.csv", "episodes.csv", "summary.json"):
            serial = tmp_path / "serial" / "paper" / agent / "seed0" / name
            assert (directory / name).read_bytes() == serial.read_bytes(), (agent, name)
    assert not (tmp_path / "ray" / "_resume").exists()


def test_replayed_demonstrations_leave_the_environment_where_playing_them_would(params):
    """The demonstrations played in an environment of their own are the teacher's
    decisions in the run's environment, and restoring their generator state makes the
    run's next episode the one that follows them."""
    spec = tiny_spec(params, demo_episodes=2)
    demonstrations = demonstrate(spec)
    env, obs, _info = training_env(spec)
    teacher = make_teacher(spec)
    played = []
    for episode in range(2):
        teacher.reset(env.sim, scheduler_rng(teacher.name, episode))
        done = False
        while not done:
            action = env.encoder.encode(teacher.decide(env.sim))
            next_obs, reward, terminated, truncated, next_info = env.step(action)
            played.append((obs, action, reward, next_info["time"]))
            done = terminated or truncated
            obs, _info = env.reset() if done else (next_obs, next_info)
    assert len(demonstrations.steps) == len(played) > 0
    for step, (obs_, action, reward, next_time) in zip(demonstrations.steps, played, strict=True):
        assert np.array_equal(step.obs, obs_) and np.array_equal(step.action, action)
        assert (step.reward, step.next_time) == (reward, next_time)
    restored, _, _ = training_env(spec)
    restored.np_random.bit_generator.state = demonstrations.env_rng
    assert np.array_equal(restored.reset()[0], obs)


def test_a_run_given_another_agents_demonstrations_ends_as_one_that_plays_its_own(params):
    """Demonstrations depend on the seed, workloads and teacher only: a run given those
    of another agent's run of the same seed trains the same networks; those of another
    seed are refused."""
    spec = tiny_spec(params, total_steps=40, eval_every=40, bc_updates=10)
    own = train_run(spec)
    given = train_run(spec, demonstrations=demonstrate(tiny_spec(params, agent="sac")))
    for name, tensor in own.actor_state.items():
        assert torch.equal(tensor, given.actor_state[name]), name
    assert own.curves.equals(given.curves)
    for key in ("teacher_labels", "warm_start_decisions", "decisions", "val_reward"):
        assert own.summary[key] == given.summary[key], key
    assert own.summary["demonstrations_s"] == 0 < given.summary["demonstrations_s"]
    with pytest.raises(ValueError, match=r"another run's \(they differ in \['seed'\]\)"):
        train_run(spec, demonstrations=demonstrate(tiny_spec(params, seed=1)))


def test_the_matrix_plays_each_shared_demonstration_set_once(params, tmp_path):
    """One set per preset and seed of the warm-started runs, not one per run; a set only
    one run needs (the metro run) and a run resuming past its warm start play none."""
    specs = resolve_matrix(params)
    sets = demonstration_sets(specs, tmp_path)
    train = params.train
    shared = [
        s for s in resolve_runs(params) if s.config.init == "bc" and s.preset_name in train.presets
    ]
    firsts = [runs[0] for runs in sets.values()]
    assert {(s.preset_name, s.config.seed) for s in firsts} == {
        (s.preset_name, s.config.seed) for s in shared
    }
    assert len(sets) == len(train.presets) * train.n_seeds < len(shared)
    assert not any(s.preset_name == train.scale.preset for s in firsts)
    # every run of a seed but one resumes from a checkpoint: its set is played in that run
    edge_seed0 = [s for s in shared if (s.preset_name, s.config.seed) == ("edge", 0)]
    for spec in edge_seed0[1:]:
        (tmp_path / spec.relative_dir).mkdir(parents=True)
        (tmp_path / spec.relative_dir / RESUME_FILE).write_bytes(b"")
    assert len(demonstration_sets(specs, tmp_path)) == len(sets) - 1


def test_numerics_are_pinned_to_one_cpu_capability():
    """import eat pins ATen, MKL and oneDNN to AVX2 on x86-64, so AVX-512 and AVX2
    machines train the same attention networks (the capability is read when torch first
    dispatches, so importing torch first does not matter)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the pin is for x86-64")
    code = "import torch, eat; torch.zeros(1) + 1; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"


def test_train_entry_point_smoke(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(
        {
            k: v
            for k, v in TINY.items()
            if k not in ("total_steps", "eval_every", "demo_episodes", "bc_updates")
        }
    )
    raw["train"].update(
        bc_updates={"paper": 40, "edge": 40},
        total_steps={"paper": 40, "edge": 40},
        eval_every={"paper": 40, "edge": 40},
        demo_episodes={"paper": 2, "edge": 1},
        validation_seeds=1,
        scale=None,
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_params(path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "eat",
            "--params",
            str(path),
            "--root",
            str(tmp_path),
            "train",
            "--agent",
            "sac",
            "--preset",
            "paper",
            "--seed",
            "0",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"agent": "sac"' in out.stdout
    assert (tmp_path / "models" / "paper" / "sac" / "seed0" / "actor.pt").exists()


def test_crossed_bootstrap_covers_training_and_workload_variance():
    import pandas as pd

    from eat.evaluation.trained import aggregate_crossed, crossed_bootstrap_ci

    rng = np.random.default_rng(0)
    # 5 training seeds x 10 test seeds: a training-seed effect plus workload noise.
    matrix = rng.normal(0, 1, (5, 1)) + rng.normal(0, 1, (1, 10)) + 10
    mean, low, high = crossed_bootstrap_ci(
        matrix, confidence=0.95, n_resamples=2000, rng=np.random.default_rng(1)
    )
    assert low < mean < high and mean == pytest.approx(matrix.mean())
    # Wider than a bootstrap over the training-seed means alone (which ignores workloads).
    rows = matrix.mean(1)
    draws = rows[np.random.default_rng(2).integers(0, 5, (2000, 5))].mean(1)
    assert high - low > np.subtract(*np.quantile(draws, [0.975, 0.025]))
    frame = pd.DataFrame(
        [
            {
                "preset": "paper",
                "scheduler": "eat",
                "rate": 0.05,
                "train_seed": i,
                "seed": 1000 + j,
                "latency_mean": matrix[i, j],
            }
            for i in range(5)
            for j in range(10)
        ]
    )
    out = aggregate_crossed(frame, ["latency_mean"], confidence=0.95, n_resamples=500, seed=0).iloc[
        0
    ]
    assert (out["n_seeds"], out["n_train_seeds"]) == (10, 5)
    assert out["latency_mean_ci_low"] < out["latency_mean"] < out["latency_mean_ci_high"]
    with pytest.raises(ValueError, match="incomplete"):
        aggregate_crossed(frame.iloc[1:], ["latency_mean"], confidence=0.95, n_resamples=50, seed=0)


def test_phase_table_orders_phases_and_takes_gains_from_the_phase_before():
    import pandas as pd

    from eat.stages.train import phase_table

    runs = pd.DataFrame(
        {
            "preset": ["edge"],
            "agent": ["eat"],
            "seed": [0],
            "val_reward": [9.0],  # the selected phase's: must not clash with the melt
            "sac_val_reward": [8.0],
            "bc_val_reward": [10.0],
            "dagger1_val_reward": [10.5],
            "final_val_reward": [7.0],
        }
    )
    teachers = pd.DataFrame({"preset": ["edge"], "teacher": ["rollout"], "reward": [11.0]})
    table = phase_table(runs, teachers)
    assert table["phase"].tolist() == ["bc", "dagger1", "sac"]
    assert table["gain"].tolist()[1:] == pytest.approx([0.5, -2.5])
    assert table["teacher_val_reward"].eq(11.0).all()
