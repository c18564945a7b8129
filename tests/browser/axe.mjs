// axe.mjs: owns the accessibility check every browser test runs: axe-core on a page as it is
// now, no WCAG 2.0/2.1/2.2 A or AA violation. axe is evaluated through the debugging protocol,
// which the page's Content-Security-Policy does not govern, rather than injected as a script
// tag, which the policy would rightly refuse.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

/** Fails with every violation on `page` (`name` says which page in the message). */
export async function assertAccessible(page, name) {
  await page.evaluate(await readFile(AXE, 'utf8'));
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] },
    });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}; ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  assert.deepEqual(violations, [], `${name}: accessibility violations`);
}
