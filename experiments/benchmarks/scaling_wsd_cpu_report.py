"""Report of the WSD scaling study: WSD branches vs cosine runs, compute saved, fits and their rows.

Command:   python experiments/benchmarks/scaling_wsd_cpu_report.py experiments/benchmarks/scaling_wsd_cpu/results.csv \
               [--cosine experiments/benchmarks/scaling_wsd_cpu/cosine_controls.csv] \
               [--seeds experiments/benchmarks/scaling_wsd_cpu/seeds.csv]
Prints:    the run ends (N, D, epochs over the 518,635-token training split, schedule, eval bits per
           byte), the WSD-vs-cosine cells with their relative difference, the compute of each size's
           WSD family (long run + cooldowns) against separate cosine runs at the same lengths, and
           which rows each law is fit on. With --cosine (experiments/scaling_wsd_cosine_controls.py):
           the whole grid of cells at the study's lr, and each tuned cell at its best cosine lr. With
           --seeds (experiments/scaling_wsd_cpu_seeds.py): the comparison over seeds 0, 1, 2.

References:
  Hagele et al. 2024, section 4 (compute of cooldown branches vs separate runs).
"""

import argparse

import pandas as pd

TRAIN_TOKENS = 518_635  # bundled tiny Shakespeare, 512-token BBPE (runner log)


def main(path: str, cosine_path: str | None = None, seeds_path: str | None = None) -> None:
    table = pd.read_csv(path)
    ends = table[table["final"] == 1].copy()
    ends["epochs"] = ends["tokens"] / TRAIN_TOKENS
    ends["per_token"] = ends["flops"] / ends["tokens"]
    cols = ["name", "params", "tokens", "epochs", "schedule", "parent", "branch_step", "eval_loss", "eval_bits_per_byte"]
    print(ends[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"\nrows: {len(table)} ({len(ends)} run ends with final=1 -> chinchilla/kaplan-nd; "
          f"{len(table) - len(ends)} intermediate evaluations with final=0 -> with the ends, kaplan-c/envelope)")
    print("\nWSD branch vs separately trained cosine run at the same (N, D), eval bits per byte:")
    for c in ends[ends["schedule"] == "cosine"].itertuples():
        w = ends[(ends["schedule"] == "wsd") & (ends["params"] == c.params) & (ends["tokens"] == c.tokens)].iloc[0]
        branch_cost = w["cooldown_tokens"] * w["per_token"] if isinstance(w["parent"], str) else w["flops"]
        saved = 1 - branch_cost / c.flops
        print(f"  N={c.params:>7,} D={c.tokens:>9,}: cosine {c.eval_bits_per_byte:.4f}, {w['name']} "
              f"{w['eval_bits_per_byte']:.4f} ({w['eval_bits_per_byte'] / c.eval_bits_per_byte - 1:+.2%}); "
              f"given the long run, the branch costs {1 - saved:.0%} of the cosine run")
    print("\nPer size: every length from one WSD long run + cooldowns vs one cosine run per length:")
    for n, group in ends[ends["schedule"] == "wsd"].groupby("params"):
        long = group[group["parent"].isna()].iloc[0]
        branches = group[group["parent"].notna()]
        wsd_cost = long["flops"] + (branches["cooldown_tokens"] * branches["per_token"]).sum()
        cos_cost = group["flops"].sum()
        print(f"  N={n:>7,}: {len(group)} lengths; WSD {wsd_cost:.3g} FLOPs vs separate runs {cos_cost:.3g} "
              f"({1 - wsd_cost / cos_cost:.0%} saved)")


    if cosine_path:
        cosine_controls(ends, pd.read_csv(cosine_path))
    if cosine_path and seeds_path:
        seeds(ends, pd.read_csv(cosine_path), pd.read_csv(seeds_path))


def cosine_controls(ends: pd.DataFrame, controls: pd.DataFrame) -> None:
    """The grid of WSD ends vs cosine at the study's lr, and the tuned cells (names ending -lrxF / -to0)."""
    controls = controls[controls["final"] == 1]
    wsd = ends[ends["schedule"] == "wsd"].set_index(["params", "tokens"])["eval_bits_per_byte"]
    plain = pd.concat([ends[ends["schedule"] == "cosine"], controls[~controls["name"].str.contains("-lrx|-to0")]])
    print("\nWhole grid, cosine at the study's lr (WSD / cosine - 1, eval bits per byte; * = within 1%):")
    grid = plain.assign(ratio=[wsd[(r.params, r.tokens)] / r.eval_bits_per_byte - 1 for r in plain.itertuples()])
    table = grid.pivot_table(index="params", columns="tokens", values="ratio")
    print(table.map(lambda x: f"{x:+.2%}" + ("*" if abs(x) <= 0.01 else " ")).to_string())
    print(f"cells within 1%: {int((grid['ratio'].abs() <= 0.01).sum())} of {len(grid)}")
    tuned = controls[controls["name"].str.contains("-lrx|-to0")]
    print("\nTuned cells: cosine at other lrs (10% floor) and decayed to zero; WSD vs the best cosine:")
    for (n, d), group in tuned.groupby(["params", "tokens"]):
        runs = pd.concat([group, plain[(plain["params"] == n) & (plain["tokens"] == d)]])
        best = runs.loc[runs["eval_bits_per_byte"].idxmin()]
        each = ", ".join(f"{r.name.rsplit('-', 1)[-1] if r.name in set(group['name']) else 'rule'} lr {r.lr:.3g} "
                         f"{r.eval_bits_per_byte:.4f}" for r in runs.sort_values("lr").itertuples())
        print(f"  N={n:>7,} D={d:>9,}: {each}\n      best {best['eval_bits_per_byte']:.4f} (lr {best['lr']:.3g}); "
              f"WSD {wsd[(n, d)]:.4f} ({wsd[(n, d)] / best['eval_bits_per_byte'] - 1:+.2%})")


def seeds(ends: pd.DataFrame, controls: pd.DataFrame, repeats: pd.DataFrame) -> None:
    """WSD / cosine - 1 per seed at the cells the repeats cover (seed 0: the study and its controls)."""
    seed0 = pd.concat([ends, controls[(controls["final"] == 1) & ~controls["name"].str.contains("-lrx|-to0")]])
    runs = pd.concat([seed0.assign(seed=0), repeats[repeats["final"] == 1]])
    runs = runs[runs["params"].isin(repeats["params"])]
    bpb = runs.pivot_table(index=["params", "tokens", "seed"], columns="schedule", values="eval_bits_per_byte")
    bpb = bpb.dropna()
    bpb["ratio"] = bpb["wsd"] / bpb["cosine"] - 1
    print("\nOver seeds (eval bits per byte; WSD / cosine - 1 per seed, mean and sample sd):")
    for (n, d), cell in bpb.groupby(level=["params", "tokens"]):
        each = ", ".join(f"s{seed} {r:+.2%}" for (_, _, seed), r in cell["ratio"].items())
        print(f"  N={n:>7,} D={d:>9,}: {each}; mean {cell['ratio'].mean():+.2%} sd {cell['ratio'].std():.2%}; "
              f"cosine sd {cell['cosine'].std():.4f}, WSD sd {cell['wsd'].std():.4f} bpb")
    within = (bpb["ratio"].abs() <= 0.01).sum()
    print(f"runs within 1%: {within} of {len(bpb)}; mean over all {bpb['ratio'].mean():+.2%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the study's `sweep collect` table")
    parser.add_argument("--cosine", help="the cosine controls' `sweep collect` table")
    parser.add_argument("--seeds", help="the seed repeats' `sweep collect` table (needs --cosine)")
    args = parser.parse_args()
    main(args.results, args.cosine, args.seeds)
