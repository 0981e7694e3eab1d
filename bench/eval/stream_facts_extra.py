"""The table of bench/eval/stream_facts_extra.sh: streaming facts on Moby Dick,
the grid's trials 0-2 (docs/eval/results.jsonl) plus trials 3-8
(docs/eval/stream_facts_extra.jsonl), correct / prompts per keep ratio."""
import collections
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "eval"
GRID = HERE / "results.jsonl"
EXTRA = HERE / "stream_facts_extra.jsonl"
grid='--lengths 1024,2048,4096 --chunk 128 --trials 3 --facts 4'
label={'full':'full','policy=hash,probe=query,score=instant':'hash q/instant','policy=hash,probe=query,score=decayed,estimate=logit,redundancy=1':'hash q/logit+red','policy=sink-recent':'sink+recent','policy=knorm':'knorm'}
mods={'llama': 'SmolLM2-135M', 'gemma3': 'Gemma3-270M'}  # the model field's first word -> label
for m,lm in mods.items():
    c=collections.defaultdict(lambda:[0,0])
    if True:
        for l in open(EXTRA):
            r=json.loads(l); cfg=r['config']
            if not r['model'].lower().replace(' ','').startswith(m): continue
            base,_,keep=cfg.rpartition(',keep=') if 'keep=' in cfg else (cfg,'','-')
            c[(label.get(base,base),keep,'new')][0]+=r['correct']; c[(label.get(base,base),keep,'new')][1]+=1
    for l in open(GRID):
        r=json.loads(l)
        if r.get('task')!='facts' or r.get('scenario')!='stream' or r.get('label_model')!=lm or r.get('grid')!=grid or r.get('runtime')=='fork': continue
        lp=r['label_policy']; lp='full' if lp=='full cache' else lp
        keep='-' if lp=='full' else str(r['keep'])
        if lp not in label.values(): continue
        c[(lp,keep,'grid')][0]+=r['correct']; c[(lp,keep,'grid')][1]+=1
    print('##',lm)
    for p in ['full','hash q/instant','hash q/logit+red','sink+recent','knorm']:
        row=[]
        for k in (['-'] if p=='full' else ['0.3','0.5','0.7']):
            g=c[(p,k,'grid')]; n=c[(p,k,'new')]
            row.append(f"{g[0]+n[0]}/{g[1]+n[1]} (grid {g[0]}/{g[1]}, new {n[0]}/{n[1]})")
        print(f"| {p} | "+" | ".join(row)+" |")
