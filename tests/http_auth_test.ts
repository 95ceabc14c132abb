/** The HTTP token file (supervisor/http/auth.ts): what it accepts, and what it refuses. */

import assert from "node:assert/strict";
import { ConfigError } from "../supervisor/config.ts";
import { MIN_TOKEN_CHARS, Tokens } from "../supervisor/http/auth.ts";

const GOOD = "0123456789abcdef0123";

Deno.test("tokens: names, comments and blank lines; Bearer matched whole and case-blind", () => {
  const tokens = Tokens.parse(`\n# a comment\n  team-a : ${GOOD}  \n${GOOD}x\n`, "t");
  assert.equal(tokens.entries.length, 2);
  const named = tokens.check(`Bearer ${GOOD}`);
  const unnamed = tokens.check(`bearer ${GOOD}x`);
  assert.equal(named?.tenant, "team-a");
  assert.ok(unnamed !== undefined && !("tenant" in unnamed));
  assert.notEqual(named?.key, unnamed?.key);
  for (const caller of [named, unnamed]) assert.ok(!caller!.key.includes(GOOD));
  for (const wrong of [GOOD, `Bearer ${GOOD.slice(1)}`, `Basic ${GOOD}`, `Bearer ${GOOD} more`]) {
    assert.equal(tokens.check(wrong), undefined, wrong);
  }
});

Deno.test("tokens: a caller is known by its token and name, not by the line (reloads move lines)", () => {
  const before = Tokens.parse(`alice:${GOOD}\nbob:${GOOD}x\n`, "t");
  const after = Tokens.parse(`bob:${GOOD}x\n`, "t");
  // Bob's token moved to alice's line: it is still bob, and not alice's.
  assert.equal(after.check(`Bearer ${GOOD}x`)?.key, before.check(`Bearer ${GOOD}x`)?.key);
  assert.notEqual(after.check(`Bearer ${GOOD}x`)?.key, before.check(`Bearer ${GOOD}`)?.key);
  // A token renamed runs for another tenant: another caller.
  const renamed = Tokens.parse(`carol:${GOOD}\n`, "t");
  assert.notEqual(renamed.check(`Bearer ${GOOD}`)?.key, before.check(`Bearer ${GOOD}`)?.key);
});

Deno.test("tokens: a file that cannot be used names the line, never the token", () => {
  const cases: [string, RegExp][] = [
    ["short\n", new RegExp(`line 1: a token must be at least ${MIN_TOKEN_CHARS} characters`)],
    [`${GOOD}\n${GOOD}\n`, /line 2: the same token is on an earlier line/],
    [`has space:${GOOD}\n`, /line 1: the name must be 1-128 printable ASCII/],
    ["# nothing\n\n", /holds no token/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => Tokens.parse(text, "tokens.txt"), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, message);
      assert.ok(!error.message.includes(GOOD));
      return true;
    });
  }
  assert.throws(() => Tokens.load("/nonexistent/tokens"), /cannot read httpTokenFile/);
});
