//! Replays the committed fuzz corpora (and any regressions) through the fuzz entry points on
//! stable, so CI checks them without cargo-fuzz.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seen = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                run(&std::fs::read(&path).unwrap());
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "no corpus for {target}");
}

#[test]
fn gateway_config_corpus() {
    replay("gateway_config", tollgate::gateway::fuzzing::gateway_config);
}

#[test]
fn route_table_corpus() {
    replay("route_table", tollgate::gateway::fuzzing::route_table);
}
