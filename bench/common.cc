#include "common.hh"

#include <dlfcn.h>
#include <jemalloc/jemalloc.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include <memo.h>

namespace bench {

bool g_quick = false;
unsigned char g_secret[XXH3_SECRET_DEFAULT_SIZE];
double g_ns_per_tick = 1.0;
double g_work_per_ns = 1.0;

void init_secret()
{
    XXH3_generateSecret_fromSeed(g_secret, kSeed);
}


std::vector<uint32_t> zipf_stream(uint32_t universe, double s, uint64_t seed, size_t n)
{
    // Inverse CDF by binary search over the normalised cumulative weights k^-s, k = 1..universe.
    std::vector<double> cdf(universe);
    double sum = 0;
    for (uint32_t k = 0; k < universe; k++) {
        sum += 1.0 / std::pow((double)(k + 1), s);
        cdf[k] = sum;
    }
    for (auto &c : cdf)
        c /= sum;
    std::vector<uint32_t> out(n);
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(x) >> 11) * 0x1.0p-53;
        out[i] = (uint32_t)(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
        if (out[i] >= universe)
            out[i] = universe - 1;
    }
    return out;
}

void calibrate_clock()
{
    // The TSC against CLOCK_MONOTONIC over 3 x 30 ms; the median ratio.
    double r[3];
    for (int i = 0; i < 3; i++) {
        uint64_t n0 = now_ns(), t0 = ticks();
        while (now_ns() - n0 < 30000000ull)
            ;
        uint64_t n1 = now_ns(), t1 = ticks();
        r[i] = (double)(n1 - n0) / (double)(t1 - t0);
    }
    std::sort(r, r + 3);
    g_ns_per_tick = r[1];
}

uint64_t thread_cpu_ns()
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

// A dependent multiply-xorshift chain: the compiler cannot shorten it, the CPU cannot overlap it.
static inline uint64_t work_steps(uint64_t steps, uint64_t x)
{
    for (uint64_t i = 0; i < steps; i++) {
        x = x * 0x5851f42d4c957f2dull + 0x14057b7ef767814full;
        x ^= x >> 29;
    }
    return x;
}

void calibrate_work()
{
    // Fastest of several timings of 2 M steps: the idle-core speed.
    double best_ns = 1e18;
    const uint64_t steps = 2000000;
    for (int i = 0; i < 15; i++) {
        uint64_t t0 = now_ns();
        benchmark::DoNotOptimize(work_steps(steps, (uint64_t)i));
        uint64_t t1 = now_ns();
        best_ns = std::min(best_ns, (double)(t1 - t0));
    }
    g_work_per_ns = (double)steps / best_ns;
}

uint64_t do_work(uint64_t ns, uint64_t seed)
{
    return work_steps((uint64_t)((double)ns * g_work_per_ns + 0.5), seed);
}

double Histogram::quantile(double q) const
{
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)std::ceil(q * (double)total);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; i++) {
        seen += counts[i];
        if (seen >= rank) {
            // middle of the bucket
            double lo = lower(i), hi = i + 1 < kBuckets ? lower(i + 1) : lo;
            return (lo + hi) / 2;
        }
    }
    return lower(kBuckets - 1);
}

uint64_t jemalloc_allocated()
{
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    mallctl("epoch", &epoch, &len, &epoch, len);
    size_t allocated = 0;
    len = sizeof allocated;
    if (mallctl("stats.allocated", &allocated, &len, nullptr, 0) != 0)
        return 0;
    return allocated;
}

uint64_t rss_bytes()
{
    std::ifstream f("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    f >> size >> resident;
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

void jemalloc_purge()
{
    char name[64];
    std::snprintf(name, sizeof name, "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
    mallctl(name, nullptr, nullptr, nullptr, 0);
}

static std::string first_line_of(const char *cmd)
{
    std::string out;
    if (FILE *p = popen(cmd, "r")) {
        char buf[512];
        while (std::fgets(buf, sizeof buf, p))
            out += buf;
        pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
        out.pop_back();
    return out;
}

void add_context(const char *git_sha)
{
    std::string cpu = first_line_of("grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'");
    benchmark::AddCustomContext("cpu_model", cpu);
    benchmark::AddCustomContext("online_cpus", std::to_string(sysconf(_SC_NPROCESSORS_ONLN)));
    struct utsname u;
    uname(&u);
    benchmark::AddCustomContext("kernel", std::string(u.sysname) + " " + u.release + " " + u.machine);
    benchmark::AddCustomContext("os", first_line_of(". /etc/os-release 2>/dev/null; echo \"$PRETTY_NAME\""));
    benchmark::AddCustomContext("compiler", "g++ " + std::string(__VERSION__));
    benchmark::AddCustomContext("memo_version", memo_version());
    benchmark::AddCustomContext("git_sha", git_sha ? git_sha : "unknown");
    benchmark::AddCustomContext(
        "packages",
        first_line_of("dpkg-query -W -f='${Package}=${Version} ' libbenchmark-dev libtbb-dev libcuckoo-dev "
                      "liburcu-dev libglib2.0-dev libck-dev libjemalloc-dev libxxhash-dev gnuplot-nox "
                      "python3 2>/dev/null"));
    Dl_info info;
    const char *alloc = "unknown";
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    if (sym && dladdr(sym, &info) && info.dli_fname)
        alloc = info.dli_fname;
    benchmark::AddCustomContext("process_malloc", alloc);
    benchmark::AddCustomContext("hash", "XXH3_64bits_withSecret, secret from XXH3_generateSecret_fromSeed, one seed for all peers");
    benchmark::AddCustomContext("tsc_ns_per_tick", std::to_string(g_ns_per_tick));
    benchmark::AddCustomContext("work_steps_per_ns", std::to_string(g_work_per_ns));
    benchmark::AddCustomContext("profile", g_quick ? "quick" : "full");
}

} // namespace bench
