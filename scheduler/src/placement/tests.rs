use super::*;
use crate::profile::GpuProfile;

fn models() -> Vec<String> {
    vec!["llama".to_owned()]
}

fn backend<'a>(name: &'a str, models: &'a [String], profile: &str) -> Backend<'a> {
    let p = GpuProfile::named(profile).unwrap();
    Backend {
        name,
        models,
        health: Health::Healthy,
        in_flight: 0,
        permits: 256,
        pending_prefill: 0,
        decoding: 0,
        context_tokens: 0,
        prefill_tokens_per_s: p.prefill_tokens_per_s,
        step_base_s: p.step_base_s,
        per_kv_token_s: p.per_kv_token_s,
        max_step_tokens: 8192,
        gpu_hour_usd: 2.0,
        cached_blocks: 0,
        admission_wait_s: 0.0,
    }
}

fn job(prompt: u32) -> Job<'static> {
    Job {
        model: "llama",
        prompt_tokens: prompt,
        output_tokens: 200,
        blocks: &[],
        priority: Priority::Interactive,
    }
}

fn external<'a>(name: &'a str, models: &'a [String], input: f64, output: f64) -> External<'a> {
    External {
        name,
        models,
        price: Price {
            input,
            output,
            cached_input: input,
            batch_input: input / 2.0,
            batch_output: output / 2.0,
        },
        ttft_s: 0.5,
    }
}

fn policy(mode: Mode) -> Policy<'static> {
    Policy {
        mode,
        ttft_slo_s: 2.0,
        max_queue_wait_s: 30.0,
        allowed_external: &[],
        budget_left_usd: None,
        batch_idle_share: 0.25,
        batch_overflow: false,
        batch_price: false,
    }
}

#[test]
fn an_idle_gpu_answers_a_short_prompt_in_about_one_step() {
    let m = models();
    let b = backend("h", &m, "h100");
    let t = estimate_ttft(&job(1000), &b);
    let expected = (1000.0 / b.prefill_tokens_per_s).max(b.step_base_s) + 1000.0 * b.per_kv_token_s;
    assert!((t - expected).abs() < 1e-9, "{t} vs {expected}");
    // Ten thousand tokens queued ahead: about their prefill time more.
    let busy = Backend {
        pending_prefill: 10_000,
        ..b.clone()
    };
    let t2 = estimate_ttft(&job(1000), &busy);
    assert!(
        t2 > 11_000.0 / b.prefill_tokens_per_s && t2 < t + 0.5,
        "{t2}"
    );
}

#[test]
fn the_estimate_agrees_with_the_engine_it_models() {
    use crate::engine::{Engine, EngineConfig, Request};
    let p = GpuProfile::named("a100").unwrap();
    let mut e = Engine::new(EngineConfig::new(p.clone()));
    let m = models();
    let mut view = backend("a", &m, "a100");
    // Five prompts of 3,000 tokens queued, then ours.
    for id in 0..5 {
        e.submit(Request {
            id,
            prompt_tokens: 3000,
            output_tokens: 100,
            blocks: vec![],
        })
        .unwrap();
        view.pending_prefill += 3000;
        view.context_tokens += 3000;
        view.in_flight += 1;
    }
    let predicted = estimate_ttft(&job(2000), &view);
    e.submit(Request {
        id: 9,
        prompt_tokens: 2000,
        output_tokens: 100,
        blocks: vec![],
    })
    .unwrap();
    let mut now = 0.0;
    let actual = loop {
        let step = e.step().unwrap();
        now += step.duration;
        if step.first_tokens.iter().any(|(id, _)| *id == 9) {
            break now;
        }
    };
    assert!(
        (predicted - actual).abs() < 0.25 * actual,
        "predicted {predicted}, simulated {actual}"
    );
}

#[test]
fn a_job_arriving_while_an_engine_decodes_waits_out_the_step_in_progress() {
    use crate::engine::{Engine, EngineConfig, Request};
    // An L4's decode steps are long (76 ms and more), and a short prompt
    // needs one step of its own: what is left of the step it arrives in is
    // a third of its TTFT.
    let p = GpuProfile::named("l4").unwrap();
    let mut e = Engine::new(EngineConfig::new(p.clone()));
    let m = models();
    let mut view = backend("l", &m, "l4");
    let mut contexts = std::collections::HashMap::new();
    for id in 0..8 {
        e.submit(Request {
            id,
            prompt_tokens: 1500,
            // All eight fit the L4's KV cache (42,700 tokens) at once.
            output_tokens: 1000,
            blocks: vec![],
        })
        .unwrap();
        contexts.insert(id, 1500u64);
    }
    // Until all eight decode.
    let mut first = 0;
    while first < 8 {
        let step = e.step().unwrap();
        first += step.first_tokens.len();
        for id in step.tokens {
            *contexts.get_mut(&id).unwrap() += 1;
        }
    }
    view.in_flight = 8;
    view.decoding = 8;
    view.context_tokens = contexts.values().sum();
    let predicted = estimate_ttft(&job(100), &view);
    // The job arrives during the next step, at a uniformly random moment
    // of it: on average half the step is left, then its own steps.
    let in_progress = e.step().unwrap().duration;
    e.submit(Request {
        id: 99,
        prompt_tokens: 100,
        output_tokens: 200,
        blocks: vec![],
    })
    .unwrap();
    let mut own = 0.0;
    loop {
        let step = e.step().unwrap();
        own += step.duration;
        if step.first_tokens.iter().any(|(id, _)| *id == 99) {
            break;
        }
    }
    let actual = in_progress / 2.0 + own;
    assert!(
        (predicted - actual).abs() < 0.05 * actual,
        "predicted {predicted}, simulated mean {actual} ({in_progress} s step in progress)"
    );
    // Nothing running: no step to wait out.
    let idle = backend("l", &m, "l4");
    assert_eq!(step_in_progress(&idle), 0.0);
}

#[test]
fn a_cached_prefix_makes_a_backend_faster_and_cheaper() {
    let m = models();
    let cold = backend("cold", &m, "l4");
    let warm = Backend {
        name: "warm",
        cached_blocks: 8,
        ..cold.clone()
    };
    let blocks: Vec<u64> = (0..10).collect();
    let j = Job {
        blocks: &blocks,
        ..job(5000)
    };
    assert!(estimate_ttft(&j, &warm) < 0.5 * estimate_ttft(&j, &cold));
    assert!(local_cost(&j, &warm) < local_cost(&j, &cold));
    let d = place(&j, &[cold, warm], &[], &policy(Mode::PreferLocal), 0.0);
    assert_eq!(d.target, Target::Local { backend: 1 });
    assert_eq!(d.reason, Reason::SloMetLocal);
}

#[test]
fn overflow_goes_to_the_cheapest_allowed_external_only_when_local_misses_the_slo() {
    let m = models();
    let b = backend("h", &m, "l4");
    let externals = [
        external("dear", &m, 5.0, 15.0),
        external("cheap", &m, 0.15, 0.6),
    ];
    let p = policy(Mode::PreferLocal);
    let d = place(&job(1000), std::slice::from_ref(&b), &externals, &p, 0.0);
    assert_eq!(
        (d.target, d.reason),
        (Target::Local { backend: 0 }, Reason::SloMetLocal)
    );
    let swamped = Backend {
        pending_prefill: 100_000,
        in_flight: 40,
        ..b.clone()
    };
    let d = place(
        &job(1000),
        std::slice::from_ref(&swamped),
        &externals,
        &p,
        0.0,
    );
    assert_eq!(
        (d.target, d.reason),
        (Target::External { deployment: 1 }, Reason::Overflow)
    );
    let expected = (1000.0 * 0.15 + 200.0 * 0.6) / 1e6;
    assert!((d.cost_usd - expected).abs() < 1e-12);
    // Only the dear one allowed.
    let only_dear = ["dear".to_owned()];
    let p2 = Policy {
        allowed_external: &only_dear,
        ..p.clone()
    };
    let d = place(
        &job(1000),
        std::slice::from_ref(&swamped),
        &externals,
        &p2,
        0.0,
    );
    assert_eq!(d.target, Target::External { deployment: 0 });
    // A budget too small for any external: queue locally.
    let p3 = Policy {
        budget_left_usd: Some(1e-6),
        ..p.clone()
    };
    let d = place(
        &job(1000),
        std::slice::from_ref(&swamped),
        &externals,
        &p3,
        0.0,
    );
    assert_eq!(
        (d.target, d.reason),
        (Target::Local { backend: 0 }, Reason::QueuedLocal)
    );
}

#[test]
fn local_only_queues_within_the_bound_then_rejects() {
    let m = models();
    let externals = [external("cheap", &m, 0.15, 0.6)];
    let b = Backend {
        pending_prefill: 20_000,
        ..backend("l", &m, "l4")
    };
    let p = policy(Mode::LocalOnly);
    let d = place(&job(1000), std::slice::from_ref(&b), &externals, &p, 0.0);
    assert_eq!(d.reason, Reason::QueuedLocal, "{d:?}");
    assert!(d.ttft_s > 2.0);
    let tight = Policy {
        max_queue_wait_s: 3.0,
        ..p
    };
    let d = place(
        &job(1000),
        std::slice::from_ref(&b),
        &externals,
        &tight,
        0.0,
    );
    assert_eq!((d.target, d.reason), (Target::Reject, Reason::QueueFull));
    let other = ["mistral".to_owned()];
    let d = place(&job(10), &[backend("x", &other, "h100")], &[], &p, 0.0);
    assert_eq!((d.target, d.reason), (Target::Reject, Reason::NoBackend));
}

#[test]
fn cheapest_takes_an_external_cheaper_than_a_costly_gpu() {
    let m = models();
    let pricey = Backend {
        gpu_hour_usd: 500.0,
        ..backend("l", &m, "l4")
    };
    let externals = [external("cheap", &m, 0.15, 0.6)];
    let d = place(
        &job(1000),
        std::slice::from_ref(&pricey),
        &externals,
        &policy(Mode::Cheapest),
        0.0,
    );
    assert_eq!(d.reason, Reason::ExternalCheaper);
    let d = place(
        &job(1000),
        std::slice::from_ref(&pricey),
        &externals,
        &policy(Mode::PreferLocal),
        0.0,
    );
    assert_eq!(d.reason, Reason::SloMetLocal);
}

#[test]
fn drained_and_full_backends_get_nothing_and_degraded_ones_are_second_choice() {
    let m = models();
    let healthy = backend("a", &m, "a100");
    let degraded = Backend {
        health: Health::Degraded,
        ..backend("b", &m, "h100")
    };
    // The H100 is faster and cheaper, but degraded: the healthy A100 wins.
    let d = place(
        &job(10_000),
        &[healthy.clone(), degraded.clone()],
        &[],
        &policy(Mode::PreferLocal),
        0.0,
    );
    assert_eq!(d.target, Target::Local { backend: 0 }, "{d:?}");
    let drained = Backend {
        health: Health::Drained,
        ..healthy.clone()
    };
    let full = Backend {
        in_flight: 256,
        ..healthy.clone()
    };
    let d = place(
        &job(100),
        &[drained.clone(), full, degraded],
        &[],
        &policy(Mode::PreferLocal),
        0.0,
    );
    assert_eq!(d.target, Target::Local { backend: 2 });
    let d = place(&job(100), &[drained], &[], &policy(Mode::PreferLocal), 0.0);
    assert_eq!(d.reason, Reason::NoBackend);
}

#[test]
fn batch_work_waits_for_an_idle_backend() {
    let m = models();
    let busy = Backend {
        in_flight: 100,
        ..backend("a", &m, "h100")
    };
    let idle = Backend {
        in_flight: 10,
        ..backend("b", &m, "h100")
    };
    let batch = Job {
        priority: Priority::Batch,
        ..job(500)
    };
    let p = policy(Mode::PreferLocal);
    let d = place(&batch, &[busy.clone(), idle], &[], &p, 0.0);
    assert_eq!(
        (d.target, d.reason),
        (Target::Local { backend: 1 }, Reason::BatchIdle)
    );
    let d = place(&batch, &[busy], &[], &p, 0.0);
    assert_eq!((d.target, d.reason), (Target::Defer, Reason::BatchDeferred));
}

#[test]
fn batch_work_a_deadline_needs_goes_to_the_cheapest_external() {
    let m = models();
    let busy = Backend {
        in_flight: 100,
        ..backend("a", &m, "h100")
    };
    let idle = Backend {
        in_flight: 10,
        ..backend("b", &m, "h100")
    };
    let externals = [external("y", &m, 3.0, 12.0), external("x", &m, 2.0, 8.0)];
    let batch = Job {
        priority: Priority::Batch,
        ..job(500)
    };
    let p = Policy {
        batch_overflow: true,
        ..policy(Mode::PreferLocal)
    };
    // An idle local backend still comes first.
    let d = place(&batch, &[busy.clone(), idle], &externals, &p, 0.0);
    assert_eq!(d.reason, Reason::BatchIdle);
    let d = place(&batch, std::slice::from_ref(&busy), &externals, &p, 0.0);
    assert_eq!(
        (d.target, d.reason),
        (Target::External { deployment: 1 }, Reason::DeadlineOverflow)
    );
    let expected = (500.0 * 2.0 + 200.0 * 8.0) / 1e6;
    assert!((d.cost_usd - expected).abs() < 1e-12, "{}", d.cost_usd);
    // Never in local_only mode, and never without the flag.
    let local_only = Policy {
        batch_overflow: true,
        ..policy(Mode::LocalOnly)
    };
    let d = place(
        &batch,
        std::slice::from_ref(&busy),
        &externals,
        &local_only,
        0.0,
    );
    assert_eq!(d.target, Target::Defer);
    let d = place(&batch, &[busy], &externals, &policy(Mode::PreferLocal), 0.0);
    assert_eq!(d.target, Target::Defer);
}

#[test]
fn overflow_through_a_providers_batch_api_is_compared_at_batch_prices() {
    let m = models();
    let busy = Backend {
        in_flight: 100,
        ..backend("a", &m, "h100")
    };
    // `x` is cheaper synchronously; `y` has the deeper batch discount.
    let mut y = external("y", &m, 3.0, 12.0);
    y.price.batch_input = 0.5;
    y.price.batch_output = 2.0;
    let externals = [external("x", &m, 2.0, 8.0), y];
    let batch = Job {
        priority: Priority::Batch,
        ..job(500)
    };
    let sync = Policy {
        batch_overflow: true,
        ..policy(Mode::PreferLocal)
    };
    let d = place(&batch, std::slice::from_ref(&busy), &externals, &sync, 0.0);
    assert_eq!(d.target, Target::External { deployment: 0 });
    let by_batch = Policy {
        batch_price: true,
        ..sync
    };
    let d = place(&batch, &[busy], &externals, &by_batch, 0.0);
    assert_eq!(d.target, Target::External { deployment: 1 });
    let expected = (500.0 * 0.5 + 200.0 * 2.0) / 1e6;
    assert!((d.cost_usd - expected).abs() < 1e-12, "{}", d.cost_usd);
}
