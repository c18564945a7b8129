// Unit tests of the referral pages' ordering and ages (no browser).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { byPriority, formatAge } from '../src/referrals.js';

test('the inbox puts open two-week-wait referrals first, then urgent, oldest first within each', () => {
  const r = (id, urgency, sentAt, status = 'delivered') => ({ id, urgency, sent_at: sentAt, status });
  const list = [
    r('routine-old', 'routine', 1),
    r('urgent-new', 'urgent', 50),
    r('twow-closed', 'two-week-wait', 1, 'closed'),
    r('twow-new', 'two-week-wait', 40),
    r('urgent-old', 'urgent', 10),
    r('twow-old', 'two-week-wait', 20),
  ];
  assert.deepEqual(list.sort(byPriority).map((x) => x.id),
    ['twow-old', 'twow-new', 'urgent-old', 'urgent-new', 'routine-old', 'twow-closed']);
});

test('ages read in minutes, hours, then days', () => {
  assert.equal(formatAge(5), '1 min');
  assert.equal(formatAge(600), '10 min');
  assert.equal(formatAge(3 * 3600), '3 h');
  assert.equal(formatAge(5 * 86400), '5 d');
  assert.equal(formatAge(-1), '');
});
