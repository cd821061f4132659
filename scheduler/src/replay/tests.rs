use super::*;

fn traces() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces")
}

fn fleet(toml_text: &str) -> Fleet {
    toml::from_str(toml_text).unwrap()
}

const ONE_L4_AND_OPENAI: &str = r#"
    [[gpus]]
    profile = "l4"
    gpu_hour_usd = 0.8

    [[externals]]
    name = "openai"
    provider = "openai"
    model = "gpt-4o-mini"
    ttft_s = 0.6

    [policy]
    ttft_slo_s = 2.0
"#;

fn catalog() -> Catalog {
    Catalog::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/litellm_prices.json"),
    )
    .unwrap()
}

fn burst(n: usize, every_s: f64, prompt: u32, output: u32) -> Vec<TraceRequest> {
    (0..n)
        .map(|i| TraceRequest {
            at: i as f64 * every_s,
            prompt_tokens: prompt,
            output_tokens: output,
            blocks: vec![],
        })
        .collect()
}

#[test]
fn parses_azures_csv_with_times_from_the_first_request() {
    let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                2023-11-16 18:15:46.6805900,374,44\n\
                2023-11-16 18:15:50.9951690,396,0\n";
    let t = parse_azure(text).unwrap();
    assert_eq!(t.len(), 2);
    assert!(
        (t[1].at - t[0].at - 4.314_579).abs() < 1e-6,
        "{}",
        t[1].at - t[0].at
    );
    assert_eq!((t[0].prompt_tokens, t[0].output_tokens), (374, 44));
    assert_eq!(t[1].output_tokens, 1, "an empty answer still has one token");
    let bad = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,x,1\n";
    assert!(parse_azure(bad).unwrap_err().starts_with("line 2"));
    let bad = "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n";
    assert!(parse_azure(bad).unwrap_err().contains("timestamp"));
}

#[test]
fn parses_mooncakes_jsonl_with_its_prefix_blocks() {
    let text = "{\"timestamp\": 1500, \"input_length\": 1000, \"output_length\": 5, \"hash_ids\": [0, 7]}\n\n\
                {\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": []}\n";
    let t = parse_mooncake(text).unwrap();
    assert_eq!(t[0].at, 1.5);
    assert_eq!(t[0].blocks, vec![0, 7]);
    assert!(
        parse_mooncake("{\"timestamp\": 1}")
            .unwrap_err()
            .starts_with("line 1")
    );
}

#[test]
fn reads_the_shipped_traces() {
    let azure = read_trace(&traces().join("azure_llm_2023_conv.csv")).unwrap();
    assert_eq!(azure.len(), 19_366);
    assert_eq!(azure[0].at, 0.0);
    assert!(azure.windows(2).all(|w| w[0].at <= w[1].at));
    assert!((3500.0..3700.0).contains(&azure.last().unwrap().at));
    let mooncake = read_trace(&traces().join("mooncake_conversation.jsonl")).unwrap();
    assert_eq!(mooncake.len(), 12_031);
    assert!(mooncake.iter().any(|r| r.blocks.len() > 10));
    assert!(read_trace(&traces().join("README.md")).is_err());
}

#[test]
fn a_light_load_stays_local_and_meets_the_slo() {
    let f = fleet(ONE_L4_AND_OPENAI);
    let trace = burst(20, 5.0, 500, 50);
    let r = replay(&trace, &f, &catalog(), Strategy::Switchyard, 1.0).unwrap();
    assert_eq!((r.local, r.external, r.rejected), (20, 0, 0));
    assert_eq!(r.slo_attainment, 1.0);
    assert!(r.ttft_p99_s < 0.3, "{r:?}");
    assert_eq!(r.external_spend_usd, 0.0);
    assert!(r.gpu_utilisation > 0.0 && r.gpu_utilisation < 1.0);
}

#[test]
fn an_overload_overflows_just_enough_to_hold_the_slo() {
    let f = fleet(ONE_L4_AND_OPENAI);
    // 4 requests a second of 2,000 prompt tokens: twice what an L4
    // prefills (3,781 tokens/s).
    let trace = burst(400, 0.25, 2000, 100);
    let c = catalog();
    let ours = replay(&trace, &f, &c, Strategy::Switchyard, 1.0).unwrap();
    let local = replay(&trace, &f, &c, Strategy::RoundRobin, 1.0).unwrap();
    let external = replay(&trace, &f, &c, Strategy::AlwaysExternal, 1.0).unwrap();
    assert!(
        ours.slo_attainment >= 0.99,
        "{}",
        table(std::slice::from_ref(&ours))
    );
    assert!(
        local.slo_attainment < 0.5,
        "{}",
        table(std::slice::from_ref(&local))
    );
    assert_eq!(external.external, 400);
    assert!(ours.local > 100 && ours.external > 100, "{ours:?}");
    assert!(ours.external_spend_usd < 0.75 * external.external_spend_usd);
    // The same inputs give the same answer.
    let again = replay(&trace, &f, &c, Strategy::Switchyard, 1.0).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{again:?}"));
}

#[test]
fn rate_scale_compresses_arrivals() {
    let f = fleet(ONE_L4_AND_OPENAI);
    let trace = burst(40, 1.0, 100, 10);
    let slow = replay(&trace, &f, &catalog(), Strategy::RoundRobin, 1.0).unwrap();
    let fast = replay(&trace, &f, &catalog(), Strategy::RoundRobin, 4.0).unwrap();
    assert!(
        fast.span_s < slow.span_s / 3.0,
        "{} vs {}",
        fast.span_s,
        slow.span_s
    );
}

#[test]
fn bad_fleets_and_policies_are_refused_with_reasons() {
    let c = catalog();
    let unknown_gpu = fleet("[[gpus]]\nprofile = \"v100\"\ngpu_hour_usd = 1.0\n");
    assert!(
        replay(&[], &unknown_gpu, &c, Strategy::Switchyard, 1.0)
            .unwrap_err()
            .contains("v100")
    );
    let unpriced =
        fleet("[[externals]]\nname = \"x\"\nprovider = \"acme\"\nmodel = \"m\"\nttft_s = 1.0\n");
    assert!(
        replay(&[], &unpriced, &c, Strategy::Switchyard, 1.0)
            .unwrap_err()
            .contains("not in the price catalog")
    );
    assert!(toml::from_str::<Fleet>("gpu = 1").is_err());
    assert_eq!(Strategy::parse("queue:8"), Ok(Strategy::QueueThreshold(8)));
    assert!(Strategy::parse("random").is_err());
}
