#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_gateway::fuzzing::proxy_header(data));
