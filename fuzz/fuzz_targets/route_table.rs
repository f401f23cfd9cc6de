#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::gateway::fuzzing::route_table(data));
