// MathJax 3 for the whole site, loaded by the reader's browser (the build fetches nothing; offline, formulas
// stay readable as their TeX source).  It typesets only
//   * .arithmatex elements: the pages' formulas, which pymdownx.arithmatex (generic mode) writes as \( \) and \[ \];
//   * .jp-MarkdownOutput elements: the notebooks' Markdown cells, rendered by mkdocs-jupyter with $ $ and $$ $$.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput"
  }
};

document$.subscribe(() => {
  if (window.MathJax && window.MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
