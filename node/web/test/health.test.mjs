// health.test.mjs: the health page's pure parts: a member's state, sizes, a replica's progress.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { memberState, progress, size } from '../src/health.js';

test('a member not answering is said so before whether it is connected', () => {
  assert.deepEqual(memberState({ connected: true, not_answering_secs: 12 }), { text: 'Not answering for 12 s', tag: 'down' });
  assert.deepEqual(memberState({ connected: true, not_answering_secs: null }), { text: 'Connected', tag: 'up' });
  assert.deepEqual(memberState({ connected: false }), { text: 'Not connected', tag: 'away' });
});

test('sizes and progress read as people read them', () => {
  assert.equal(size(512), '512 B');
  assert.equal(size(2_500_000), '2.5 MB');
  assert.equal(size(3_200_000_000), '3.2 GB');
  assert.equal(progress({ held: 1234, tiles: 2000 }), '1,234 of 2,000 tiles (61.7%)');
  assert.equal(progress({ held: 0, tiles: 0 }), '0 of 0 tiles (0.0%)');
});
