/*
 * rwsem.pml: a Promela model of sync/rwsem, the directory semaphore.
 *
 * What is modelled is the Go code, step for step, not an idealised lock:
 * the state word (WRITER, WAITERS, HANDOFF, reader count), the wait list
 * with its prev/next links under waitMu, the reader phase that skips
 * writers and counts only real readers, writer lock stealing, the head
 * writer that is woken, not granted, and takes s itself or sleeps again
 * (wakeWriterLocked, tryWriteLockLocked, sleepWriter), the handoff bit,
 * the wake list collected under waitMu and posted after it, the Token (a
 * one-slot channel per record) and record reuse. Each inline below is
 * named after the Go function it stands for (file in brackets); each
 * proctype after the public calls its goroutine makes.
 *
 * Granularity. Every atomic operation on the state word is one step. A
 * Go compare-and-swap loop (load; decide; CAS; retry on failure) is one
 * atomic step here: a CAS that succeeds found the value it loaded, so the
 * loop behaves as if load-decide-store happened at the CAS; a failing CAS
 * only retries (a stutter). Work on data guarded by waitMu (the list, the
 * record fields) is merged into the neighbouring step, since nobody can
 * observe it without waitMu. Token posts and receives are separate steps.
 *
 * Abstractions. Whether the head has been passed over for waitLimit
 * (w.passedOver) is a free choice: the model may set HANDOFF at any
 * pass-over. downWriteSlow's bounded yield loop (writerYields) retries
 * tryStealWrite; a failed attempt writes nothing, so the loop is one
 * steal attempt that the scheduler may delay: it is modelled as one. maxReadersWakeup (256) is never
 * reached with five goroutines. readerBias is 8 here (1<<8 in Go): only
 * its being above the flag bits matters. The record pool is a per-goroutine
 * LIFO free list of one record, as in the tests' freeList: a goroutine's
 * second wait reuses the record of its first.
 *
 * Ghost state (not in Go) checks the properties: gen[r] counts the waits
 * a record served, busy[r] is true from getRecord to putRecord,
 * grantgen[r] is gen[r] when the record was granted (for a writer: woken);
 * nr/nw count holders.
 *
 * Bug switches (spin -D...), each restoring one historical bug:
 *   MUT_R1   grant-then-touch: the wake list is threaded through the
 *            records and walked after waitMu is dropped (wakelist_mutant_r1.go,
 *            seeds/000, 2004 rwsem-scale).
 *   MUT_R2   stale wake: a waiter granted while cancelling does not consume
 *            its wakeup before its record is reused (drain_mutant_r2.go,
 *            seeds/001, the futex lockless wake).
 *   MUT_R3   after a reader phase that woke only WaitForRelease waiters the
 *            waker stops, though s is free (release_mutant_r3.go, seeds/002
 *            point 2).
 *   MUT_R3H  WaitForRelease counted as a reader in the reader phase, as in
 *            the first rwsem_wait_killable patch (seeds/002 point 1: it
 *            raises the reader count for them and disables point 2).
 *
 * Properties: assertions (mutual exclusion; R1 no touch after recycle; R2
 * no wakeup to a later wait; protocol invariants), invalid end states (a
 * waiter asleep forever: a lost wakeup), and the LTL claim `live` (every
 * goroutine finishes) under weak fairness.
 */

#define W    1   /* writerLocked */
#define WT   2   /* flagWaiters */
#define HO   4   /* flagHandoff */
#define RB   8   /* readerBias */

/* c&lockMask != 0: somebody holds s (or a reader is testing it). */
#define LOCKED(c)    (((c) & W) != 0 || (c) >= RB)
/* c&readFailMask != 0: a read fast path must not take s. */
#define READFAIL(c)  (((c) & (W|WT|HO)) != 0)

#define NIL    255
#define NREC   5         /* one record per goroutine, indexed by its id */
#define KREAD  1         /* kindRead */
#define KWRITE 2         /* kindWrite */
#define KREL   3         /* kindRelease */

#ifdef READER
#define NPROC  5
#else
#define NPROC  4
#endif

int  st;                      /* Sem.state */
bit  waitMu;                  /* Sem.waitMu */
byte head = NIL, tail = NIL;  /* Sem.head, Sem.tail */
byte nxt[NREC], prv[NREC];    /* waiter.next, waiter.prev */
byte kind[NREC];              /* waiter.kind */
bool queued[NREC];            /* waiter.queued */
bool woken[NREC];             /* waiter.woken (queued writers) */
byte tok[NREC];               /* waiter.tok: wakeups pending (0 or 1) */
#ifdef MUT_R1
byte wakeNext[NREC];          /* waiter.wakeLink.wakeNext (mutant only) */
#endif

/* ghost */
byte gen[NREC];
byte grantgen[NREC];
bool busy[NREC];
byte nr, nw;
byte ndone;
/* named assertions (hidden: not part of the state) */
hidden byte mutual_exclusion, one_wakeup_per_grant;
hidden byte R1_no_touch_after_recycle, R2_wakeup_goes_to_its_own_wait, R2_woken_by_own_grant;

/* ---- the wait lock ---- */
inline lock()   { atomic { waitMu == 0 -> waitMu = 1 } }
inline unlock() { waitMu = 0 }

/* ---- records [slow.go] ---- */

/* getRecord: a reset record of kind k. */
inline getRecord(w, k) {
	d_step {
		assert(!busy[w] && tok[w] == 0);
		busy[w] = 1; kind[w] = k; nxt[w] = NIL; prv[w] = NIL; queued[w] = 0; woken[w] = 0
#ifdef MUT_R1
		; wakeNext[w] = NIL
#endif
	}
}

/* putRecord: the record goes back to the pool; its wait is over. */
inline putRecord(w) {
	d_step { assert(busy[w] && !queued[w]); busy[w] = 0; gen[w]++ }
}

/* enqueueLocked: append w, set WAITERS if first, add adj; c = new word. */
inline enqueueLocked(w, adj) {
	d_step {
		queued[w] = 1;
		prv[w] = tail;
		if
		:: tail != NIL -> nxt[tail] = w; st = st + adj
		:: else -> head = w; st = st + adj + WT
		fi;
		tail = w;
		c = st
	}
}

/* unlinkLocked (inside d_step only) */
#define unlinkLocked(u) \
	assert(queued[u]); \
	if :: prv[u] != NIL -> nxt[prv[u]] = nxt[u] :: else -> head = nxt[u] fi; \
	if :: nxt[u] != NIL -> prv[nxt[u]] = prv[u] :: else -> tail = prv[u] fi; \
	prv[u] = NIL; nxt[u] = NIL; queued[u] = 0

/* wl.add(w) [wakelist_*.go], inside d_step only. The grant: last write. */
#ifndef MUT_R1
#define wlAdd(u) grantgen[u] = gen[u]; wl = wl | (1 << (u))
#else
#define wlAdd(u) grantgen[u] = gen[u]; \
	if :: wlt != NIL -> wakeNext[wlt] = u :: else -> wlh = u fi; wlt = u
#endif

/* removeLocked: a cancelled waiter leaves; c, wasHead. */
inline removeLocked(w) {
	d_step {
		wasHead = (head == w);
		unlinkLocked(w);
		clr = 0;
		if :: wasHead -> clr = HO :: else -> skip fi;
		if :: head == NIL -> clr = clr | WT | HO :: else -> skip fi;
		st = st & ~clr;
		c = st;
		clr = 0
	}
}

/* passedOverLocked: the head was passed over; maybe set HANDOFF
 * (now - w.passedOver >= waitLimit, or not yet). */
inline passedOverLocked(c) {
	if
	:: (c & HO) == 0 -> if :: st = st | HO :: skip fi   /* waitLimit passed, or not */
	:: else -> skip
	fi
}

/* wakeWriterLocked: wake the writer at the head if s is free, without
 * granting s; a writer already woken is not woken twice. */
inline wakeWriterLocked() {
	atomic {
		c = st;
		if
		:: LOCKED(c) -> ok = 0
		:: else ->
			ok = 1;
			if
			:: !woken[head] -> woken[head] = 1; u = head; wlAdd(u); u = 0
			:: else -> skip
			fi
		fi
	};
	if :: !ok -> passedOverLocked(c) :: else -> skip fi
}

/* tryWriteLockLocked: the queued writer w, the head, takes s if free;
 * got = 1 if it did (w dequeued). */
inline tryWriteLockLocked(w) {
	atomic {
		assert(head == w);
		c = st;
		if
		:: LOCKED(c) -> got = 0
		:: else ->
			n = (c | W) & ~HO;
			if :: nxt[w] == NIL -> n = n & ~WT :: else -> skip fi;
			st = n; got = 1;
			unlinkLocked(w); n = 0
		fi
	};
	if :: !got -> passedOverLocked(c) :: else -> skip fi
}

/*
 * grantReadersLocked: a reader phase for the reader or WaitForRelease
 * waiter at the head. Sets again (race R3: look at the head again).
 */
inline grantReadersLocked() {
	atomic {
		/* count the phase (waitMu-guarded data) */
		readers = 0; left = 0; u = head;
		do
		:: u == NIL -> break
		:: u != NIL && kind[u] == KWRITE -> left = 1; u = nxt[u]
		:: u != NIL && kind[u] == KREAD  -> readers++; u = nxt[u]
#ifdef MUT_R3H
		:: u != NIL && kind[u] == KREL   -> readers++; u = nxt[u]
#else
		:: u != NIL && kind[u] == KREL   -> u = nxt[u]
#endif
		od;
		c = st;
		if
		:: (c & W) != 0 -> ok = 0
		:: else ->
			n = (c + readers * RB) & ~HO;
			if :: !left -> n = n & ~WT :: else -> skip fi;
			st = n; ok = 1;
			/* grant every non-writer, in queue order */
			u = head;
			do
			:: u == NIL -> break
			:: u != NIL && kind[u] == KWRITE -> u = nxt[u]
			:: u != NIL && kind[u] != KWRITE -> nx = nxt[u]; unlinkLocked(u); wlAdd(u); u = nx
			od;
			nx = 0
		fi
	};
	if
	:: !ok -> passedOverLocked(c); again = 0
	:: else ->
#if defined(MUT_R3) || defined(MUT_R3H)
		again = 0
#else
		/* wakeNextIfFree [release_r3.go] */
		again = (readers == 0 && head != NIL && !LOCKED(n))
#endif
	fi;
	readers = 0; left = 0; n = 0
}

/* markWakeLocked: grant s to whoever at the head can have it now. */
inline markWakeLocked() {
	do
	:: head == NIL -> break
	:: head != NIL && kind[head] == KWRITE -> wakeWriterLocked(); break
	:: head != NIL && kind[head] != KWRITE ->
		grantReadersLocked();
		if :: again -> again = 0 :: else -> break fi
	od;
	ok = 0
}

/* waitq.Token.Post, with the ghost check that the wakeup goes to the wait
 * it was granted to (R2: never to a later wait on the same record). */
inline post(u) {
	atomic {
		one_wakeup_per_grant = (tok[u] == 0);         /* Post panics otherwise */
		assert(one_wakeup_per_grant);
		R2_wakeup_goes_to_its_own_wait = (busy[u] && gen[u] == grantgen[u]);
		assert(R2_wakeup_goes_to_its_own_wait);
		tok[u] = 1
	}
}

/* issue / wakeList.wake: post what was collected, waitMu not held. */
inline issue() {
#ifndef MUT_R1
	do
	:: wl == 0 -> break
	:: wl != 0 ->
		d_step { u = 0; do :: (wl & (1 << u)) != 0 -> break :: else -> u++ od };
		atomic { post(u); wl = wl & ~(1 << u); u = 0 }
	od
#else
	/* MUT_R1: walk the records after the grant */
	u = wlh;
	do
	:: u == NIL -> break
	:: u != NIL ->
		post(u);
		atomic {
			R1_no_touch_after_recycle = (busy[u] && gen[u] == grantgen[u]);
			assert(R1_no_touch_after_recycle);
			nx = wakeNext[u];
			wakeNext[u] = NIL;
			u = nx; nx = 0
		}
	od;
	wlh = NIL; wlt = NIL; u = 0
#endif
}

/* wake: markWakeLocked under waitMu, issue after. */
inline wake() {
	lock(); markWakeLocked(); unlock(); issue()
}

/* consumeGrantWakeup [drain_*.go] */
inline consumeGrantWakeup(w) {
#ifndef MUT_R2
	atomic { tok[w] == 1 -> tok[w] = 0 }
#else
	skip
#endif
}

/*
 * sleep: wait for the grant, or (cancellable) for ctx. Without a ctx
 * (cancellable 0) Go does a plain tok.Consume: the first branch alone. err = 0: granted
 * (s held as asked); err = 1: cancelled, nothing held or queued.
 */
inline sleep(w, cancellable) {
	if
	:: atomic { tok[w] == 1 -> tok[w] = 0;
		R2_woken_by_own_grant = (!queued[w] && grantgen[w] == gen[w]);
		assert(R2_woken_by_own_grant) };
		putRecord(w); err = 0
	:: cancellable ->            /* <-ctx.Done() */
		lock();
		if
		:: queued[w] ->
			removeLocked(w);
			if :: wasHead && (c & W) == 0 -> markWakeLocked() :: else -> skip fi;
			wasHead = 0;
			unlock(); issue(); putRecord(w); err = 1
		:: else ->
			unlock();
			consumeGrantWakeup(w);
			putRecord(w); err = 0
		fi
	fi;
	c = 0
}

/*
 * sleepWriter: a queued writer waits to be woken (err = 0: still queued,
 * it retries) or (cancellable) for ctx (err = 1: dequeued, record freed).
 */
inline sleepWriter(w, cancellable) {
	if
	:: atomic { tok[w] == 1 -> tok[w] = 0;
		R2_woken_by_own_grant = (queued[w] && woken[w] && grantgen[w] == gen[w]);
		assert(R2_woken_by_own_grant) };
		err = 0
	:: cancellable ->            /* <-ctx.Done() */
		lock();
		removeLocked(w);
		if :: wasHead && (c & W) == 0 -> markWakeLocked() :: else -> skip fi;
		wasHead = 0; got = woken[w];
		unlock(); issue();
		if :: got -> consumeGrantWakeup(w) :: else -> skip fi;
		got = 0; putRecord(w); err = 1
	fi;
	c = 0
}

/* ---- the public calls [rwsem.go] ---- */

inline downRead(w, cancellable) {       /* DownRead, DownReadCtx */
	atomic { st = st + RB; c = st };
	if
	:: !READFAIL(c) -> err = 0
	:: else ->                           /* downReadSlow */
		lock();
		if
		:: head == NIL && (st & W) == 0 -> unlock(); err = 0
		:: else ->
			getRecord(w, KREAD);
			enqueueLocked(w, -RB);
			if :: (c & W) == 0 -> markWakeLocked() :: else -> skip fi;
			unlock(); issue();
			sleep(w, cancellable)
		fi
	fi;
	c = 0
}

inline upRead() {                        /* UpRead, upReadSlow */
	atomic { st = st - RB; c = st };
	if
	:: (c & WT) != 0 || c < 0 ->
		assert(c >= 0);                  /* rwsem: up_read of unheld semaphore */
		if :: !LOCKED(c) -> wake() :: else -> skip fi
	:: else -> skip
	fi;
	c = 0
}

inline downWrite(w, cancellable) {      /* DownWrite, DownWriteCtx */
	atomic { if :: st == 0 -> st = W; ok = 1 :: else -> ok = 0 fi };
	if
	:: ok -> err = 0
	:: else ->                           /* downWriteSlow */
		atomic {                         /* tryStealWrite (the writerYields loop: see the header) */
			if
			:: !LOCKED(st) && (st & HO) == 0 -> st = st | W; ok = 1
			:: else -> ok = 0
			fi
		};
		if
		:: ok -> err = 0
		:: else ->
			lock();
			getRecord(w, KWRITE);
			enqueueLocked(w, 0);
			do
			:: head == w ->
				tryWriteLockLocked(w);
				if
				:: got -> got = 0; unlock(); putRecord(w); err = 0; break
				:: else -> unlock(); issue()
				fi;
				sleepWriter(w, cancellable);
				if :: err -> break :: else -> lock(); woken[w] = 0; c = st fi
			:: head != w ->
				if :: (c & W) == 0 -> markWakeLocked() :: else -> skip fi;
				unlock(); issue();
				sleepWriter(w, cancellable);
				if :: err -> break :: else -> lock(); woken[w] = 0; c = st fi
			od
		fi
	fi;
	ok = 0; c = 0
}

inline upWrite() {                       /* UpWrite, upWriteSlow */
	atomic {
		if
		:: st == W -> st = 0; ok = 1
		:: else -> c = st; st = st - W; ok = 0
		fi
	};
	if
	:: !ok ->
		assert((c & W) != 0);            /* rwsem: up_write of unheld semaphore */
		if :: (c & WT) != 0 -> wake() :: else -> skip fi
	:: else -> skip
	fi;
	ok = 0; c = 0
}

inline waitForRelease(w) {               /* WaitForRelease, waitForReleaseSlow */
	if
	:: !READFAIL(st) -> skip
	:: else ->
		lock();
		if
		:: !READFAIL(st) -> unlock()
		:: else ->
			getRecord(w, KREL);
			enqueueLocked(w, 0);
			if :: (c & W) == 0 -> markWakeLocked() :: else -> skip fi;
			unlock(); issue();
			sleep(w, 0)
		fi
	fi;
	c = 0
}

/* critical sections, with the mutual exclusion check */
inline readCS() {
	atomic { nr++; mutual_exclusion = (nw == 0 && st >= RB); assert(mutual_exclusion) };
	nr--
}
inline writeCS() {
	atomic { nw++; mutual_exclusion = (nw == 1 && nr == 0 && (st & W) != 0); assert(mutual_exclusion) };
	nw--
}

/* locals every goroutine needs for the inlines */
#ifndef MUT_R1
#define LOCALS int c, n; byte u, nx, readers, clr, wl; bit ok, got, left, again, wasHead, err
#else
#define LOCALS int c, n; byte u, nx, readers, clr, wlh = NIL, wlt = NIL; bit ok, got, left, again, wasHead, err
#endif

/* A writer: DownWrite; UpWrite. */
proctype DownWrite_UpWrite(byte me) {
	LOCALS;
	downWrite(me, 0);
	writeCS();
	upWrite();
	ndone++
}

/* A reader: DownRead; UpRead. */
proctype DownRead_UpRead(byte me) {
	LOCALS;
	downRead(me, 0);
	readCS();
	upRead();
	ndone++
}

/* A lockless reader that saw a writer: WaitForRelease. */
proctype WaitForRelease(byte me) {
	LOCALS;
	waitForRelease(me);
	ndone++
}

/* A cancelling waiter: DownReadCtx twice on its recycled record, each
 * wait ended by its ctx at any moment (a FUSE INTERRUPT). */
proctype DownReadCtx_twice(byte me) {
	LOCALS;
	byte i;
	do
	:: i == 2 -> break
	:: i < 2 ->
		downRead(me, 1);
		if :: err == 0 -> readCS(); upRead() :: else -> skip fi;
		err = 0; i++
	od;
	i = 0;
	ndone++
}

init {
	atomic {
		run DownWrite_UpWrite(0);
		run DownWrite_UpWrite(1);
		run WaitForRelease(2);
		run DownReadCtx_twice(3)
#ifdef READER
		; run DownRead_UpRead(4)
#endif
	}
}

ltl live { <> (ndone == NPROC) }
