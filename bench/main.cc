// memo_bench: the Google Benchmark harness over memo's C API and its peers.
//
// Flags of its own (the rest are Google Benchmark's):
//   --memo_profile=quick|full    workload sizes (default full)
//   --memo_workloads=W1,W2,...   which workloads to register (default all)
//   --memo_sha=SHA               the git SHA recorded in the results' context
//   --memo_write_streams=DIR     write the W3 key streams for bench/lru_cache.py and exit
#include <cstring>
#include <string>
#include <vector>

#include "common.hh"
#include "workloads.hh"

int main(int argc, char **argv)
{
    std::string workloads = "W1,W2,W3,W4,W5,W6,W7", sha = "unknown", streams_dir;
    std::vector<char *> rest;
    for (int i = 0; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&](const char *flag) -> const char * {
            size_t n = std::strlen(flag);
            return a.compare(0, n, flag) == 0 ? argv[i] + n : nullptr;
        };
        if (const char *v = value("--memo_profile="))
            bench::g_quick = std::strcmp(v, "quick") == 0;
        else if (const char *v = value("--memo_workloads="))
            workloads = v;
        else if (const char *v = value("--memo_sha="))
            sha = v;
        else if (const char *v = value("--memo_write_streams="))
            streams_dir = v;
        else
            rest.push_back(argv[i]);
    }
    bench::init_secret();
    if (!streams_dir.empty())
        return bench::write_streams(streams_dir);
    bench::calibrate_clock();
    bench::calibrate_work();

    auto wanted = [&](const char *w) { return ("," + workloads + ",").find(std::string(",") + w + ",") != std::string::npos; };
    if (wanted("W1")) bench::register_w1();
    if (wanted("W2")) bench::register_w2();
    if (wanted("W3")) bench::register_w3();
    if (wanted("W4")) bench::register_w4();
    if (wanted("W5")) bench::register_w5();
    if (wanted("W6")) bench::register_w6();
    if (wanted("W7")) bench::register_w7();

    int n = (int)rest.size();
    benchmark::Initialize(&n, rest.data());
    if (benchmark::ReportUnrecognizedArguments(n, rest.data()))
        return 1;
    bench::add_context(sha.c_str());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
