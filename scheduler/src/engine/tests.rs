use super::*;

fn engine(profile: &str) -> Engine {
    Engine::new(EngineConfig::new(GpuProfile::named(profile).unwrap()))
}

fn request(id: u64, prompt: u32, output: u32, blocks: Vec<u64>) -> Request {
    Request {
        id,
        prompt_tokens: prompt,
        output_tokens: output,
        blocks,
    }
}

/// Steps until idle; per request, the time of its first and last token.
fn run(e: &mut Engine) -> std::collections::HashMap<u64, (f64, f64)> {
    let mut now = 0.0;
    let mut seen = std::collections::HashMap::new();
    while let Some(step) = e.step() {
        now += step.duration;
        for (id, _) in &step.first_tokens {
            seen.insert(*id, (now, now));
        }
        for id in &step.finished {
            seen.get_mut(id).unwrap().1 = now;
        }
    }
    seen
}

#[test]
fn one_request_prefills_in_one_step_then_decodes_a_token_per_step() {
    let mut e = engine("h100");
    e.submit(request(1, 1000, 3, vec![])).unwrap();
    let first = e.step().unwrap();
    let p = e.config().profile.clone();
    assert_eq!(first.first_tokens, vec![(1, 0)]);
    assert_eq!(first.prefill_tokens, 1000);
    assert!((first.duration - p.step_seconds(1000, 1000)).abs() < 1e-12);
    let second = e.step().unwrap();
    assert_eq!(second.tokens, vec![1]);
    assert_eq!(second.decode_tokens, 1);
    assert!((second.duration - p.step_seconds(0, 1001)).abs() < 1e-12);
    let third = e.step().unwrap();
    assert_eq!(third.finished, vec![1]);
    assert!(e.step().is_none());
    assert!(e.is_idle());
    let m = e.metrics();
    assert_eq!(m.generation_tokens_total, 3);
    assert_eq!(m.requests_finished_total, 1);
    assert_eq!(m.kv_usage, 0.0);
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks_of_the_step_budget() {
    let mut e = engine("a100");
    e.submit(request(1, 20_000, 1, vec![])).unwrap();
    let steps: Vec<Step> = std::iter::from_fn(|| e.step()).collect();
    assert_eq!(
        steps.iter().map(|s| s.prefill_tokens).collect::<Vec<_>>(),
        vec![8192, 8192, 3616]
    );
    assert!(steps[..2].iter().all(|s| s.first_tokens.is_empty()));
    assert_eq!(steps[2].finished, vec![1]);
}

#[test]
fn running_requests_share_steps_and_a_new_prefill_joins_the_batch() {
    let mut e = engine("h100");
    e.submit(request(1, 100, 50, vec![])).unwrap();
    e.step().unwrap();
    e.submit(request(2, 100, 50, vec![])).unwrap();
    let step = e.step().unwrap();
    assert_eq!(step.decode_tokens, 1);
    assert_eq!(step.prefill_tokens, 100);
    assert_eq!(step.tokens, vec![1]);
    assert_eq!(step.first_tokens, vec![(2, 0)]);
    assert_eq!(e.metrics().running, 2);
}

#[test]
fn a_shared_prefix_is_not_prefilled_again() {
    let mut e = engine("l4");
    e.submit(request(1, 3 * 512 + 100, 1, vec![7, 8, 9, 10]))
        .unwrap();
    let cold = e.step().unwrap();
    assert_eq!(cold.prefill_tokens, 3 * 512 + 100);
    assert_eq!(e.cached_blocks(&[7, 8, 9, 11]), 3);
    e.submit(request(2, 3 * 512 + 100, 1, vec![7, 8, 9, 11]))
        .unwrap();
    let warm = e.step().unwrap();
    assert_eq!(warm.first_tokens, vec![(2, 3 * 512)]);
    assert_eq!(warm.prefill_tokens, 100);
    assert!(warm.duration < cold.duration);
    let m = e.metrics();
    assert_eq!(m.prefix_hits_total, 3 * 512);
    // A prompt that is all cached still computes its last token.
    e.submit(request(3, 512, 1, vec![7])).unwrap();
    assert_eq!(e.step().unwrap().prefill_tokens, 1);
}

#[test]
fn without_prefix_caching_nothing_is_reused() {
    let mut config = EngineConfig::new(GpuProfile::named("l4").unwrap());
    config.prefix_cache = false;
    let mut e = Engine::new(config);
    for id in 0..2 {
        e.submit(request(id, 600, 1, vec![1, 2])).unwrap();
        assert_eq!(e.step().unwrap().prefill_tokens, 600);
    }
}

#[test]
fn the_kv_cache_bounds_what_runs_and_the_rest_waits_its_turn() {
    let mut e = engine("l4"); // 42,724 KV tokens
    for id in 0..3 {
        e.submit(request(id, 15_000, 2, vec![])).unwrap();
    }
    e.step().unwrap();
    let m = e.metrics();
    assert_eq!((m.running, m.waiting), (2, 1));
    assert!(m.kv_usage > 0.7 && m.kv_usage <= 1.0);
    let done = run(&mut e);
    assert_eq!(done.len(), 3);
    assert!(
        done[&2].0 > done[&1].1,
        "the third starts after one finishes"
    );
    assert_eq!(
        e.submit(request(9, 50_000, 1, vec![])),
        Err(Refused::TooLong(50_001, 42_724))
    );
    assert_eq!(e.submit(request(9, 0, 1, vec![])), Err(Refused::Empty));
}

#[test]
fn no_more_than_max_running_run_at_once() {
    let mut config = EngineConfig::new(GpuProfile::named("h100").unwrap());
    config.max_running = 4;
    let mut e = Engine::new(config);
    for id in 0..10 {
        e.submit(request(id, 10, 5, vec![])).unwrap();
    }
    while let Some(step) = e.step() {
        assert!(step.decode_tokens + step.first_tokens.len() as u64 <= 4);
        assert!(e.metrics().running <= 4);
    }
    assert_eq!(e.metrics().requests_finished_total, 10);
}

#[test]
fn throughput_grows_with_the_batch_until_the_kv_read_dominates() {
    // Decode-only tokens per second at batch 1 and 64 (short contexts).
    let rate = |batch: u64| {
        let mut e = engine("h100");
        for id in 0..batch {
            e.submit(request(id, 16, 200, vec![])).unwrap();
        }
        let mut time = 0.0;
        let mut tokens = 0;
        while let Some(step) = e.step() {
            time += step.duration;
            tokens += step.decode_tokens + step.first_tokens.len() as u64;
        }
        tokens as f64 / time
    };
    let (one, many) = (rate(1), rate(64));
    assert!(one > 100.0 && one < 160.0, "{one}");
    assert!(many > 40.0 * one, "{many} vs {one}");
}

#[test]
fn blocks_evicted_to_host_memory_are_loaded_back_faster_than_recomputed() {
    // An L4 holds 83 blocks; each request below takes 40 (20,480 tokens).
    let profile = GpuProfile::named("l4").unwrap();
    let run_three = |host_kv_tokens: u64| {
        let mut config = EngineConfig::new(profile.clone());
        config.host_kv_tokens = host_kv_tokens;
        let mut e = Engine::new(config);
        let blocks = |base: u64| (base..base + 40).collect::<Vec<_>>();
        // A, then B, C and D push A's blocks off the GPU.
        for (id, base) in [(1, 0), (2, 100), (3, 200), (5, 300)] {
            e.submit(request(id, 40 * 512, 1, blocks(base))).unwrap();
            run(&mut e);
        }
        // A again.
        e.submit(request(4, 40 * 512 + 10, 1, blocks(0))).unwrap();
        let mut time = 0.0;
        let mut loaded = 0;
        let mut cached = 0;
        while let Some(step) = e.step() {
            time += step.duration;
            loaded += step.host_loaded_tokens;
            if let Some(&(_, c)) = step.first_tokens.first() {
                cached = c;
            }
        }
        (time, loaded, cached, e.metrics())
    };
    let (cold, loaded, cached, m) = run_three(0);
    assert_eq!(
        (loaded, cached, m.host_hits_total),
        (0, 0, 0),
        "no host tier"
    );
    let (warm, loaded, cached, m) = run_three(100 * 512);
    assert_eq!(loaded, 40 * 512, "A's blocks come back from host memory");
    assert_eq!(cached, 40 * 512);
    assert_eq!(m.host_hits_total, 40 * 512);
    let copy = 40.0 * 512.0 / profile.host_load_tokens_per_s;
    assert!(warm < cold / 5.0, "load {warm} s vs recompute {cold} s");
    assert!(warm >= copy, "the copy takes time: {warm} < {copy}");
    // A host tier too small for A keeps none of it.
    let (_, loaded, _, _) = run_three(10 * 512);
    assert_eq!(loaded, 0);
}
