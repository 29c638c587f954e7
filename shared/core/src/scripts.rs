//! The project's Lua scripts, the only ones anything of ours runs on Redis: the edge's
//! hand-off to the long-job stream and the native consumer's stream-lease scripts. Plain
//! constants with no dependency, because `shared/upstash-local` compiles this very file in
//! (`#[path]`) to learn the SHA-1s it lets through: the gateway runs these scripts and
//! refuses any other (see its README). A new script must be added to [`ALL`].

/// The Lua script that hands attempt ARGV[2] of job ARGV[1] to the stream KEYS[1] at most
/// once: KEYS[2] remembers the entry, so a retried hand-off returns the first entry instead
/// of adding another. Returns `{1, entry}` when added, `{0, entry}` when already there.
/// An added entry is announced on the channel `<stream>:wake`, which idle consumers hold a
/// subscription to (the consumer's `wake.rs`), so they read it at once instead of at their
/// next poll.
pub const HANDOFF_SCRIPT: &str = "local dup = redis.call('GET', KEYS[2]) \
if dup then return {0, dup} end \
local e = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'attempt', ARGV[2]) \
redis.call('SET', KEYS[2], e, 'EX', 604800) \
redis.call('PUBLISH', KEYS[1] .. ':wake', 1) \
return {1, e}";

/// [`HANDOFF_SCRIPT`] for many attempts in one call: KEYS[1] is the stream, KEYS[2..] the
/// hand-off keys, and ARGV holds (job id, attempt, traceparent) for each of them, in order;
/// the entry gets a `traceparent` field when that is not empty (#32). Returns
/// `{1|0, entry}` per attempt. When it added any, it publishes how many on the stream's wake
/// channel (one PUBLISH per call, none when nothing was added).
pub const HANDOFF_MANY_SCRIPT: &str = "local out = {} \
local added = 0 \
for i = 2, #KEYS do \
  local dup = redis.call('GET', KEYS[i]) \
  if dup then \
    out[#out + 1] = {0, dup} \
  else \
    local tp = ARGV[3 * i - 3] \
    local e \
    if tp == '' then \
      e = redis.call('XADD', KEYS[1], '*', 'id', ARGV[3 * i - 5], 'attempt', ARGV[3 * i - 4]) \
    else \
      e = redis.call('XADD', KEYS[1], '*', 'id', ARGV[3 * i - 5], 'attempt', ARGV[3 * i - 4], 'traceparent', tp) \
    end \
    redis.call('SET', KEYS[i], e, 'EX', 604800) \
    out[#out + 1] = {1, e} \
    added = added + 1 \
  end \
end \
if added > 0 then redis.call('PUBLISH', KEYS[1] .. ':wake', added) end \
return out";

/// Takes over up to ARGV[4] entries idle for at least ARGV[3] ms, for consumer ARGV[2] of
/// group ARGV[1]. Returns `{entry, previous owner, fields}` per entry (fields `false` when
/// the entry was deleted). This consumer's own idle entries are included: an entry whose
/// start report never reached the edge is not held (so not renewed) and would otherwise
/// wait for another consumer forever; the caller skips entries it still holds.
pub const RECLAIM_SCRIPT: &str = "local out = {} \
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), '-', '+', tonumber(ARGV[4])) \
for _, e in ipairs(p) do \
  local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), e[1]) \
  if #c > 0 then \
    local fields = c[1][2] \
    if not fields then fields = false end \
    table.insert(out, {e[1], e[2], fields}) \
  end \
end \
return out";

/// A script that, for each entry in ARGV[3..], checks that consumer ARGV[2] of group ARGV[1]
/// owns it (XPENDING) and then runs `$owned` (answer 1); an entry no longer pending runs
/// `$gone` (answer 1) when given, else answers 0, like an entry another consumer owns.
macro_rules! owned_script {
    ($owned:literal) => {
        owned_script!($owned, "out[#out + 1] = 0")
    };
    ($owned:literal, $gone:literal) => {
        concat!(
            "local out = {} ",
            "for i = 3, #ARGV do ",
            "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) ",
            "if p[1] and p[1][2] == ARGV[2] then ",
            $owned,
            " out[#out + 1] = 1 ",
            "elseif not p[1] then ",
            $gone,
            " else out[#out + 1] = 0 end ",
            "end ",
            "return out"
        )
    };
}

/// Renews (resets the idle time of) each owned entry. 1 per entry renewed, 0 per entry not
/// (or no longer) owned.
pub const RENEW_SCRIPT: &str = owned_script!("redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')");

/// Acknowledges and deletes each owned entry, and deletes entries no longer pending. 1 per
/// entry done, 0 per entry left alone (another consumer owns it).
pub const ACK_SCRIPT: &str = owned_script!(
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) redis.call('XDEL', KEYS[1], ARGV[i])",
    "redis.call('XDEL', KEYS[1], ARGV[i]) out[#out + 1] = 1"
);

/// Gives entry ARGV[4] back from consumer ARGV[2] to ARGV[3] (group ARGV[1]) if ARGV[2] still
/// owns it. Returns 1 when given back.
pub const GIVE_BACK_SCRIPT: &str = "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], ARGV[4], 1) \
if p[1] and p[1][2] == ARGV[2] then \
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[4], 'JUSTID') \
  return 1 \
end \
return 0";

/// Every script above: what `upstash-local` allows by SHA-1.
pub const ALL: &[&str] =
    &[HANDOFF_SCRIPT, HANDOFF_MANY_SCRIPT, RECLAIM_SCRIPT, RENEW_SCRIPT, ACK_SCRIPT, GIVE_BACK_SCRIPT];
