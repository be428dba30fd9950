// MathJax 3 configuration (the library itself is served from assets/mathjax/, no CDN).
// Guide pages: pymdownx.arithmatex wraps math in \( \) and \[ \]; notebook pages keep
// Jupyter's $ and $$. Code (<pre>, <code>) is never touched.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
    processHtmlClass: "tex2jax_process",
  },
};
