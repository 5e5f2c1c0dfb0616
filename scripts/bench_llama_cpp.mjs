#!/usr/bin/env node
// llama.cpp beside `lab bench`: the prebuilt llama.cpp that the npm package node-llama-cpp ships
// (CPU only, never built here), timed on the same batch-1 workloads and the same token ids as
// our bench (engine/src/bin/lab/bench.rs), from the same GGUF file. Not run by CI.
//
// Phases (each: one warm-up, then --reps timed runs, the best kept; the KV cache is cleared
// before every run, so nothing is reused):
//   prefill_b1_512  one 512-token prompt; timed from the call until the first generated token
//                   comes back: the forward over the prompt in one batch, the LM head at the
//                   last position, one greedy sample. tok/s = 512 / best time.
//   decode_b1       a 16-token prompt and 64 greedy tokens; timed from the first generated token
//                   to the 64th: 63 single-token forwards, each with its LM head and greedy
//                   sample. tok/s = 63 / best time. End-of-generation tokens are generated and
//                   fed back like any other (yieldEogToken), as our bench's ignore_eos does.
// Prompt ids are our bench's `prompt(seed = 0, len, vocab)`: lo + (seed·7919 + i·104729) mod
// (vocab − lo), lo = 16, so both engines see the same tokens.
//
// The times are wall-clock times in this process, through node-llama-cpp's JavaScript layer
// (its batch queue and an event-loop turn per step); llama.cpp's own time per decode step
// (llama_perf_context: "eval time"), mean over all decode runs including the warm-up, is
// reported beside it as `llama_cpp_eval_ms_per_token` to show what that layer costs.
//
// Setup, once (the prebuilt binaries come inside the npm packages; the install scripts, which
// would download or build llama.cpp, are skipped, and getLlama is told never to build):
//   mkdir -p /tmp/llama-npm && cd /tmp/llama-npm && npm init -y
//   npm i -E --ignore-scripts node-llama-cpp@3.21.1
// Usage (--check: load the model and stop, timing nothing):
//   node scripts/bench_llama_cpp.mjs --package /tmp/llama-npm --model x.gguf --threads 2 \
//       --reps 3 --json out.json
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const PHASES = ["prefill_b1_512", "decode_b1"];

function parseArgs(argv) {
    const a = { package: "", model: "", threads: 2, reps: 3, phases: PHASES.join(","), json: "", vocab: 0, check: false };
    for (let i = 0; i < argv.length; i++) {
        const key = argv[i].replace(/^--/, "");
        if (key === "check") {
            a.check = true;
            continue;
        }
        if (!(key in a) || i + 1 >= argv.length) fail(`unknown or incomplete argument ${argv[i]}`);
        const v = argv[++i];
        a[key] = typeof a[key] === "number" ? Number(v) : v;
        if (typeof a[key] === "number" && !(Number.isInteger(a[key]) && a[key] >= 0)) {
            fail(`--${key} wants a whole number, got ${v}`);
        }
    }
    if (!a.model) fail("--model PATH.gguf is required");
    if (a.threads < 1 || a.reps < 1) fail("--threads and --reps must be at least 1");
    return a;
}

function fail(msg) {
    console.error(`bench_llama_cpp: ${msg}`);
    process.exit(2);
}

// node-llama-cpp from --package DIR (where `npm i node-llama-cpp` ran), else from wherever
// node resolves it (a node_modules above this script).
async function importNodeLlamaCpp(dir) {
    if (!dir) return import("node-llama-cpp");
    const pkg = path.join(dir, "node_modules", "node-llama-cpp");
    const manifest = path.join(pkg, "package.json");
    if (!fs.existsSync(manifest)) fail(`no node-llama-cpp in ${dir} (run npm i node-llama-cpp there)`);
    const exp = JSON.parse(fs.readFileSync(manifest, "utf8")).exports?.["."];
    const entry = (typeof exp === "string" ? exp : exp?.import ?? exp?.default) ?? "dist/index.js";
    return import(pathToFileURL(path.join(pkg, entry)).href);
}

// Our bench's synthetic prompt (bench.rs `prompt`), ids away from the special tokens.
function prompt(seed, len, vocab) {
    const lo = Math.min(16, vocab - 1);
    return Array.from({ length: len }, (_, i) => lo + ((seed * 7919 + i * 104729) % (vocab - lo)));
}

// CPU time of the whole machine (busy jiffies) and of this process, to tell how much other
// processes used during a phase (as scripts/bench_transformers.py does).
const CLK_TCK = 100;
function cpuSnapshot() {
    const v = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].split(/\s+/).slice(1, 9).map(Number);
    const busy = v.reduce((s, x) => s + x, 0) - v[3] - v[4];
    const u = process.cpuUsage();
    return { t: performance.now() / 1000, busy: busy / CLK_TCK, mine: (u.user + u.system) / 1e6 };
}
function othersCores(a, b) {
    const dt = b.t - a.t;
    return dt > 0 ? Math.max(0, (b.busy - a.busy - (b.mine - a.mine)) / dt) : 0;
}

async function bestOf(reps, f) {
    await f(); // warm-up: page in the weights, grow the buffers
    const times = [];
    for (let r = 0; r < reps; r++) times.push(await f());
    return { best_s: Math.min(...times), times_s: times };
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    if (!fs.existsSync(args.model)) fail(`${args.model} not found`);
    const { getLlama, LlamaLogLevel } = await importNodeLlamaCpp(args.package);
    const logs = [];
    const llama = await getLlama({
        gpu: false,
        build: "never", // the prebuilt binary or nothing: never compile llama.cpp here
        skipDownload: true,
        progressLogs: false,
        maxThreads: args.threads,
        logLevel: LlamaLogLevel.info,
        logger: (level, message) => {
            logs.push(message);
            if (level === "fatal") console.error(`llama.cpp: ${message}`);
        },
    });
    const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0 }).catch((e) => {
        const why = [...new Set(logs.filter((l) => /error/.test(l)).map((l) => l.trim()))].join("; ");
        fail(`llama.cpp cannot load ${args.model}: ${e.message}${why ? ` (${why})` : ""}`);
    });
    const vocab = args.vocab || model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length;
    if (!vocab) fail("cannot tell the vocabulary size: pass --vocab N");
    if (args.check) {
        // `lab bench` asks this before its own runs: the model loads, nothing is timed.
        console.log(`  llama.cpp loads ${args.model} (${model.typeDescription}, ${llama.buildType} binary)`);
        await model.dispose();
        await llama.dispose();
        return;
    }
    const newContext = () =>
        model.createContext({
            contextSize: 1024,
            batchSize: 512, // the 512-token prompt in one batch, as our engine prefills it
            sequences: 1,
            threads: { ideal: args.threads, min: args.threads },
            performanceTracking: true,
        });
    const greedy = { temperature: 0, yieldEogToken: true };

    const phases = {
        async prefill_b1_512() {
            const context = await newContext();
            const seq = context.getSequence();
            const ids = prompt(0, 512, vocab);
            const r = await bestOf(args.reps, async () => {
                await seq.clearHistory();
                const t0 = performance.now();
                const gen = seq.evaluate(ids, greedy);
                const first = await gen.next();
                const t = (performance.now() - t0) / 1000;
                await gen.return();
                if (first.done) fail("prefill produced no token");
                return t;
            });
            const used = { threads: context.currentThreads, flash_attention: context.flashAttention, batch_size: context.batchSize };
            await context.dispose();
            return { batch: 1, prompt_len: 512, ...r, tok_per_s: 512 / r.best_s, ...used };
        },
        async decode_b1() {
            const context = await newContext();
            const seq = context.getSequence();
            const ids = prompt(0, 16, vocab);
            const r = await bestOf(args.reps, async () => {
                await seq.clearHistory();
                let n = 0;
                let t0 = 0;
                for await (const _ of seq.evaluate(ids, greedy)) {
                    n += 1;
                    if (n === 1) t0 = performance.now();
                    if (n === 64) break;
                }
                if (n !== 64) fail(`decode stopped after ${n} tokens`);
                return (performance.now() - t0) / 1000;
            });
            const before = logs.length;
            await context.printTimings();
            const evalLine = logs.slice(before).find((l) => /\beval time\b/.test(l) && !/prompt eval/.test(l));
            const m = evalLine?.match(/eval time\s*=\s*([\d.]+) ms\s*\/\s*(\d+)/);
            await context.dispose();
            return {
                batch: 1, prompt_len: 16, new_tokens: 64, ...r,
                tok_per_s: 63 / r.best_s, ms_per_step: (1000 * r.best_s) / 63,
                llama_cpp_eval_ms_per_token: m ? Number(m[1]) / Number(m[2]) : null,
                llama_cpp_eval_runs: m ? Number(m[2]) : null,
            };
        },
    };

    const wanted = args.phases.split(",");
    const unknown = wanted.filter((p) => !(p in phases));
    if (unknown.length) fail(`unknown phase(s) ${unknown}; known: ${Object.keys(phases)}`);
    const chosen = {};
    for (const name of wanted) {
        const a = cpuSnapshot();
        const r = await phases[name]();
        r.others_cores = othersCores(a, cpuSnapshot());
        r.clean = r.others_cores <= 0.25;
        chosen[name] = r;
        const runs = r.times_s.map((t) => t.toFixed(3)).join(", ");
        const own = r.llama_cpp_eval_ms_per_token
            ? `; llama.cpp's own eval ${r.llama_cpp_eval_ms_per_token.toFixed(2)} ms/token over ${r.llama_cpp_eval_runs} steps, warm-up included`
            : "";
        console.log(`  llama.cpp ${name}: ${r.tok_per_s.toFixed(1)} tok/s (runs ${runs} s${own}), others ${r.others_cores.toFixed(2)} cores`);
    }
    // ggml picks one of the package's CPU builds (sse42 ... zen4) for this CPU at run time.
    const backend = fs.readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-[\w-]+\.so/)?.[0];
    const pkgDir = args.package ? path.join(args.package, "node_modules", "node-llama-cpp") : null;
    const info = {
        package: pkgDir ? `node-llama-cpp ${JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"))).version}` : "node-llama-cpp",
        build_type: llama.buildType,
        llama_cpp_release: llama.llamaCppRelease,
        cpu_backend: backend ?? null,
        system_info: llama.systemInfo.trim(),
        threads: args.threads,
        model: args.model,
        model_type: model.typeDescription,
        vocab,
        node: process.version,
        cpus: os.cpus().length,
        date: new Date().toISOString(),
    };
    console.log(`  ${info.package} (${info.build_type}, llama.cpp ${info.llama_cpp_release.release}), ${info.threads} threads`);
    if (args.json) fs.writeFileSync(args.json, JSON.stringify({ info, chosen }, null, 1));
    await model.dispose();
    await llama.dispose();
}

await main();
