/*
 * lookup.pml: a Promela model of the miss protocol of DESIGN.md section 3
 * as package lookup implements it (miss.go, call.go, change.go,
 * order_r4.go), over the in-flight slot table and locks of dcache (dir.go)
 * and the wait queue of sync/waitq (waitq.go, token.go).
 *
 * Goroutines (proctypes, named after the Go functions they run):
 *   Lookup(0), Lookup(1)  Resolver.Lookup of the same missing name; the one
 *                         that publishes first is the owner (Resolver.miss),
 *                         the other a waiter (Resolver.waitOn), or it finds
 *                         the name, or the negative entry.
 *                         Lookup(0)'s context may end at any time (a FUSE
 *                         INTERRUPT) while it waits.
 *   Unlink(2)             Resolver.Unlink of that name: lockForChange takes
 *                         sem exclusive and, holding it, waitForLoad
 *                         sleeps on the call (the `rm -f` of seeds/003).
 *   Load                  the goroutine load() starts (load.func1): the
 *                         loader answers at once (after registering the
 *                         name, or failing), never answers, or registers
 *                         after the deadline, racing step 4.
 *   LoadFinisher          load.func2: step 4 handed off when the owner's
 *                         context ends first.
 *   Idle                  a monitor: when everything has ended, Stats are 0.
 *
 * Abstractions. The directory sem is a reader-writer lock in which readers
 * also wait behind a queued writer (what sync/rwsem does: WAITERS fails the
 * read fast path); its own correctness is rwsem.pml's. A waitq.Waiter is
 * modelled with its state (queued, woken, done), its Token and the queue
 * lock. Deadlines are Promela `timeout`: a timer fires only when nothing
 * else can move, i.e. timers are long compared with computation. A waiter's
 * bound (same length, started after the owner's load began) fires only when
 * the owner, or its LoadFinisher, no longer waits for the load deadline.
 * DownReadCtx/DownWriteCtx are not interrupted in this model. A loader
 * that declines the name at once (lookup.Decliner) is not modelled: such a
 * miss publishes no record, takes no reference and waits on nothing
 * (Resolver.declined, after Resolver.Lookup released every lock), so
 * none of the properties below is about it; a loader that does not
 * decline is the Load modelled here.
 *
 * Ghost state: refs[cl] is call.refs, freed[cl] that the record's life
 * ended (refs reached 0: Stats.Live decremented), cdone[cl] that step 4
 * (Resolver.complete) unpublished cl and is waking its waiters.
 *
 * NOBOUND drops the waiters' bound (Options.Timeout): the fixed protocol
 * must not need it, and without it MUT_R4 is the plain deadlock of 2003.
 *
 * Bug switches:
 *   MUT_R4     Resolver.miss retakes sem before step 4 (r4RetakeFirst,
 *              order_mutant_r4.go; seeds/003, the devfs_lookup deadlock
 *              of 2003).
 *   MUT_STACK  the record lives on the owner's stack, as before the 2003
 *              patch: its life ends when the owner returns, whatever the
 *              waiters' references.
 *
 * Properties: invalid end states (deadlock); assertions: a waiter's wait
 * returns without EINTR only after step 4 (cdone), no reference taken on
 * or use of a record whose life ended, the slot table and reference counts
 * consistent, nothing left published or alive at the end; non-progress
 * cycles.
 */

#define NIL 255
#define NC  2              /* calls: at most two loads in a run */
#define NW  3              /* waitq records: one per Lookup/Unlink goroutine */

#define WNONE   0
#define WQUEUED 1          /* waitq stateQueued */
#define WWOKEN  2          /* waitq stateWoken */
#define WDONE   3          /* waitq stateDone */

/* dcache dir: sem, mu, the child, the negative entry, the slot table */
byte semR;                 /* sem readers */
bit  semW;                 /* sem writer */
byte semWq;                /* writers queued on sem */
bit  mu;
bit  child;                /* the name exists */
bit  negative;             /* a fresh negative entry for it */
byte inflight = NIL;       /* dir.inflight[name] */

/* calls */
byte ncalls;
byte refs[NC];             /* call.refs */
bit  cdone[NC];            /* ghost: step 4 ran */
bit  freed[NC];            /* ghost: the record's life ended */
bit  wqmu[NC];             /* call.wq.mu */
bit  inLoadWait[NC];       /* ghost: the owner/finisher waits for load or deadline */
bit  deadline[NC];         /* ghost: the load deadline passed */
chan loadDone[NC] = [1] of { bit };  /* load()'s done channel (buffered 1) */

/* named assertions (hidden: not part of the state) */
hidden byte waiter_released_by_step4, record_alive;

/* waitq records */
byte wcall[NW];
byte wstate[NW];
bit  wtok[NW];

/* ---- locks ---- */
inline lockMu()   { atomic { mu == 0 -> mu = 1 } }
inline unlockMu() { mu = 0 }
inline downRead() { atomic { semW == 0 && semWq == 0 -> semR++ } }
inline upRead()   { assert(semR > 0); semR-- }
inline downWrite() {
	semWq++;
	atomic { semW == 0 && semR == 0 -> semW = 1; semWq-- }
}
inline upWrite()  { assert(semW); semW = 0 }

/* ---- the record [call.go: call.join (its reference), call.put] ---- */
inline get(cl) {
	d_step {
		assert(mu && inflight == cl);     /* published, under mu */
		record_alive = (!freed[cl] && refs[cl] > 0);  /* never raised from zero */
		assert(record_alive);
		refs[cl]++
	}
}
inline put(cl) {
	d_step {
		record_alive = (!freed[cl] && refs[cl] > 0);
		assert(record_alive);
		refs[cl]--;
		if :: refs[cl] == 0 -> freed[cl] = 1 :: else -> skip fi
	}
}
/* a use of the record by a goroutine that holds a reference */
#define USE(cl) record_alive = !freed[cl]; assert(record_alive)

/* ---- sync/waitq ---- */

/* Queue.Prepare(false); the caller holds dir mu. */
inline prepare(me, cl) {
	atomic { wqmu[cl] == 0 -> USE(cl); wcall[me] = cl; wstate[me] = WQUEUED }
}

/* call.join: a waiter's reference, then its prepared wait; under dir mu. */
inline join(me, cl) {
	get(cl);
	prepare(me, cl)
}

/* Waiter.finish */
inline finish(me, cl) {
	atomic { wqmu[cl] == 0 -> USE(cl); assert(wstate[me] == WWOKEN); wstate[me] = WDONE }
}

/* Queue.WakeAll: grant under the queue lock, post after it. */
inline wakeAll(cl) {
	atomic {
		wqmu[cl] == 0 -> wqmu[cl] = 1;
		i = 0;
		do
		:: i == NW -> break
		:: i < NW && wcall[i] == cl && wstate[i] == WQUEUED ->
			wstate[i] = WWOKEN; wl = wl | (1 << i); i++
		:: else -> i++
		od;
		i = 0
	};
	wqmu[cl] = 0;
	do
	:: wl == 0 -> break
	:: wl != 0 ->
		d_step { i = 0; do :: (wl & (1 << i)) != 0 -> break :: else -> i++ od };
		atomic { assert(wtok[i] == 0); wtok[i] = 1; wl = wl & ~(1 << i); i = 0 }
	od
}

/*
 * Resolver.wait → Waiter.Wait with ctx (intr: may end) bounded by the
 * timeout. err = 1 only for EINTR; a passed bound returns nil, as in Go.
 */
inline wait(me, cl, intr) {
	if
	:: atomic { wtok[me] == 1 -> wtok[me] = 0 }; finish(me, cl); err = 0
#ifndef NOBOUND
	:: (intr || (timeout && !inLoadWait[cl])) ->
#else
	:: intr ->                      /* NOBOUND: waits without their bound */
#endif
		/* <-ctx.Done(): the caller's context, or the bound */
		atomic { wqmu[cl] == 0 -> wqmu[cl] = 1; USE(cl) };
		if
		:: wstate[me] == WQUEUED ->
			wstate[me] = WDONE; wqmu[cl] = 0;
			err = intr       /* EINTR if the caller's ctx ended, else the bound: nil */
		:: wstate[me] == WWOKEN ->
			wqmu[cl] = 0;
			atomic { wtok[me] == 1 -> wtok[me] = 0 };   /* tok.Consume */
			finish(me, cl); err = 0
		fi
	fi;
	/* a waiter released without EINTR is released by step 4 */
	waiter_released_by_step4 = (err || cdone[cl]);
	assert(waiter_released_by_step4)
}

/* ---- lookup ---- */

/* Namespace.Register of the name: only mu. Drops the negative entry. */
inline register() {
	lockMu();
	d_step { if :: !child -> child = 1; negative = 0 :: else -> skip fi };  /* EEXIST */
	unlockMu()
}

/* Resolver.complete: step 4 (UnpublishLocked, AddNegativeLocked, WakeAll). */
inline complete(cl) {
	lockMu();
	d_step {
		USE(cl);
		assert(inflight == cl);           /* UnpublishLocked panics otherwise */
		inflight = NIL;
		cdone[cl] = 1;
		if :: !child -> negative = 1 :: else -> skip fi   /* AddNegativeLocked */
	};
	wakeAll(cl);
	unlockMu();
	put(cl)
}

proctype Load(byte cl) {                   /* load.func1: Loader.Load */
	if
	:: register(); loadDone[cl]!0          /* answers, the name registered */
	:: loadDone[cl]!1                      /* fails */
	:: skip                                /* never answers: hangs past the deadline */
	:: deadline[cl] -> register(); loadDone[cl]!0  /* slow: registers after the deadline */
	fi
}

proctype LoadFinisher(byte cl) {           /* load.func2 */
	byte i, wl;
	bit e;
	if
	:: loadDone[cl]?e
	:: timeout -> deadline[cl] = 1
	fi;
	inLoadWait[cl] = 0;
	complete(cl)
}

/* Resolver.Lookup (with waitOn and miss), for goroutine me. */
proctype Lookup(byte me; bit intr) {
	byte cl = NIL, i, wl;
	bit err, found, handed;

	downRead();
	lockMu();                              /* step 1: EntryLocked */
	if
	:: child || negative ->
		found = child; unlockMu(); upRead()
	:: !child && !negative && inflight != NIL ->
		/* a load is in flight: waitOn, the revalidate wait, without sem */
		cl = inflight;
		join(me, cl);
		unlockMu();
		upRead();
		wait(me, cl, intr);
		put(cl);
		if
		:: err -> skip                      /* EINTR */
		:: else ->                          /* waitOn's step 5 */
			downRead(); lockMu(); found = child; unlockMu(); upRead()
		fi
	:: !child && !negative && inflight == NIL ->
		atomic {                            /* miss, step 2: PublishLocked */
			cl = ncalls; ncalls++;
			refs[cl] = 1; inflight = cl
		};
		unlockMu();
		upRead();                           /* step 3: unlockShared, load */
		atomic { run Load(cl); inLoadWait[cl] = 1 };
		if
		:: loadDone[cl]?err; inLoadWait[cl] = 0
		:: timeout -> deadline[cl] = 1; inLoadWait[cl] = 0
		:: intr ->                          /* ctx ended: hand step 4 off */
			run LoadFinisher(cl); handed = 1
		fi;
		err = 0;
		if
		:: handed -> err = 1                /* EINTR; LoadFinisher does step 4 */
		:: else ->
#ifndef MUT_R4
			complete(cl);                   /* step 4 ... */
			downRead();                     /* ... then step 5's retake */
#else
			downRead();                     /* r4RetakeFirst: retake before waking */
			complete(cl);
#endif
			lockMu(); found = child; unlockMu(); upRead()
		fi;
#ifdef MUT_STACK
		freed[cl] = 1;                      /* the record was the owner's stack frame */
#endif
		handed = 0
	fi
}

/* Resolver.Unlink: change → lockForChange (DownWriteCtx,
 * waitForLoad) → dcache Node.Unlink → UpWrite. */
proctype Unlink(byte me) {
	byte cl = NIL, i, wl;
	bit err;

	downWrite();
	lockMu();
	if
	:: inflight != NIL ->
		cl = inflight;
		join(me, cl);
		unlockMu();
		wait(me, cl, 0);                    /* holding sem exclusive */
		put(cl)
	:: else -> unlockMu()
	fi;
	lockMu();
	d_step { child = 0 };                   /* ENOENT if absent: no change */
	unlockMu();
	upWrite()
}

/* Once everything ended: Stats{InFlight: 0, Live: 0}. */
proctype Idle() {
	byte i;
	_nr_pr == 2 ->                         /* only init (ended) and Idle left */
	assert(inflight == NIL && semR == 0 && semW == 0 && !mu);
	do
	:: i == ncalls -> break
	:: i < ncalls -> assert(refs[i] == 0 && freed[i] && cdone[i]); i++
	od
}

init {
	atomic {
		run Idle();          /* first: processes die in reverse order of creation */
		run Lookup(0, 1);
		run Lookup(1, 0);
		run Unlink(2)
	}
}
