// How the README's MLflow pictures were taken: `make ui`, then headless Chromium driven by playwright-core
// (apt-get install chromium; npm install playwright-core; node docs/screenshots/compare.js ...).
// usage: node compare.js URL OUT.png PARAM METRIC [HEIGHT]
// MLflow's compare page of two runs: the parallel-coordinates plot of PARAM against METRIC (instead of the
// first metric the runs logged), and the params and metrics tables with "Show diff only" on.
const { chromium } = require('playwright-core');
(async () => {
  const [url, out, param, metric, height] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: parseInt(height || '1700') } });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForSelector('text=Parallel Coordinates Plot', { timeout: 60000 });
  await page.waitForTimeout(2000);
  const close = page.locator('button[aria-label="Close"]').first();
  if (await close.count()) { await close.click().catch(() => {}); }
  await page.getByText('Clear All').click();
  for (const [label, value] of [['Parameters:', param], ['Metrics:', metric]]) {
    await page.locator(`text=${label}`).locator('xpath=following-sibling::*[1]').click();
    await page.keyboard.type(value);
    await page.waitForTimeout(500);
    await page.keyboard.press('Enter');
    await page.keyboard.press('Escape');
    await page.waitForTimeout(500);
  }
  for (const toggle of await page.locator('text=Show diff only').all()) {
    await toggle.click().catch(() => {});
    await page.waitForTimeout(300);
  }
  await page.evaluate(() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; }));
  await page.mouse.move(5, 5);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: out });
  await browser.close();
})();
