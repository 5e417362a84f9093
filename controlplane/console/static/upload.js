// Upload progress, the console's only script: without it the forms post as usual.
// The answer is the same page the form post would have shown, written in place.
document.querySelectorAll("form.with-progress").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (!window.XMLHttpRequest || !window.FormData) { return; }
    event.preventDefault();
    var bar = form.querySelector("progress");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { bar.hidden = false; bar.value = Math.round(100 * e.loaded / e.total); }
    };
    xhr.onload = function () {
      document.open();
      document.write(xhr.responseText);
      document.close();
    };
    xhr.onerror = function () { form.submit(); };
    form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    xhr.send(new FormData(form));
  });
});
