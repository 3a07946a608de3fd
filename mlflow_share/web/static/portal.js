"use strict";
document.addEventListener("DOMContentLoaded", () => { Share.nav(""); });
