# Sums the hold-time histograms of each run in a lifetime-race.sh log. Holds under 4 us are impossible there (a process_vm_readv call lasts longer) and so are holds over 67 ms (its slowest calls took 16-33 ms).
import json,sys,re
runs=[];cur=None
for line in open(sys.argv[1],errors='replace'):
    line=line.rstrip('\n')
    m=re.match(r'== (\S+) round (\d)',line)
    if m: cur={'pw':m.group(1),'round':m.group(2),'hold':[0]*48,'tracked':0,'released':0,'untracked':0,'calls':0}; runs.append(cur); continue
    if line.startswith('JSON ') and cur:
        try: d=json.loads(line[5:])
        except Exception: continue
        for c in d.get('callers',[]):
            if c['variant']!='pin_user_pages_remote': continue
            cur['tracked']+=c['pins_tracked']; cur['released']+=c['pins_released']; cur['calls']+=c['calls']
            if c.get('hold'):
                for i,v in enumerate(c['hold']['log2_buckets']): cur['hold'][i]+=v
        cur['untracked']+=d['health']['untracked_releases']
for r in runs:
    h=r['hold']; nz={i:v for i,v in enumerate(h) if v}
    low=sum(v for i,v in enumerate(h) if i<12); high=sum(v for i,v in enumerate(h) if i>=26)
    print(f"{r['pw']} round {r['round']}: calls {r['calls']} tracked {r['tracked']} released {r['released']} untracked {r['untracked']} | holds <4us: {low}, >=67ms: {high} | buckets {nz}")
