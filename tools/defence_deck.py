"""What the defence deck says, in English and in Chinese: ``make slides [LANG=zh]``.

Every slide is a :class:`Slide` with its title, body and speaker notes in both languages.
Numbers are never typed here: ``{name}`` stands for a number of
:data:`build_slides.NUMBERS`, read from the stored outputs of the book, so both decks carry
the same numbers (``tests/test_slides.py`` checks that the digits of each slide agree between
the two languages, notes included). Chinese terms follow the book's glossary
(``book/appendix_notation.md``). A slide's ``chart`` names a figure of
:mod:`slide_charts`, redrawn for the slide from the same stored outputs.

The talk (about 25 minutes): motivation and question; chapters 1-2 (exponents, backpropagation
is the adjoint); chapter 3 (backpropagation and its remedies fail on long-time averages);
chapters 4-5 (three ways to differentiate them); chapters 6-7 (training and learning as
dynamics); what the book corrects in the draft; limitations, conclusions, future work. Backup
slides follow the closing slide.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Slide:
    """One frame. ``title``, ``body`` and ``notes`` map a language ("en", "zh") to LaTeX
    (``notes``: plain text for pdfpc); ``subtitle`` names the chapter the slide reports."""

    title: dict[str, str]
    body: dict[str, str]
    notes: dict[str, str]
    subtitle: dict[str, str] = field(default_factory=lambda: {"en": "", "zh": ""})
    chart: str | None = None
    backup: bool = False


def chapter(n: int, en: str, zh: str) -> dict[str, str]:
    return {"en": f"Chapter {n} · {en}", "zh": f"第 {n} 章 · {zh}"}


def items(*lines: str) -> str:
    return r"\begin{itemize}" + "".join(r"\item " + s for s in lines) + r"\end{itemize}"


SLIDES: list[Slide] = [
    Slide(
        {"en": "Outline", "zh": "报告提纲"},
        {"en": r"\begin{enumerate}"
               r"\item Why unstable networks, and the question"
               r"\item Lyapunov exponents and backpropagation (chapters 1--2)"
               r"\item Why backpropagation and its remedies fail (chapter 3)"
               r"\item Three ways to differentiate long-time averages (chapters 4--5)"
               r"\item Training and learning as dynamical systems (chapters 6--7)"
               r"\item Corrections to the draft, limitations, conclusions"
               r"\end{enumerate}",
         "zh": r"\begin{enumerate}"
               r"\item 为什么研究不稳定网络；问题是什么"
               r"\item 李雅普诺夫指数与反向传播（第 1--2 章）"
               r"\item 反向传播及其补救方法为何失效（第 3 章）"
               r"\item 长时间平均的三种求导方法（第 4--5 章）"
               r"\item 把训练与学习看作动力系统（第 6--7 章）"
               r"\item 对初稿的更正、局限与结论"
               r"\end{enumerate}"},
        {"en": "Six parts, about 25 minutes. Every number on these slides is read from the "
               "computed outputs of the companion book; the book shows the code and the error bars.",
         "zh": "共六部分，约 25 分钟。幻灯片上的每个数字都读自配套书中已执行的计算输出；"
               "书中给出代码与误差棒。"},
    ),
    Slide(
        {"en": "Why unstable networks?", "zh": "为什么研究不稳定网络？"},
        {"en": items(
            r"Deep networks multiply many layer Jacobians; recurrent networks and learned"
            r" dynamical models apply one map thousands of times; training itself is the map"
            r" $\theta \mapsto \theta - \alpha\nabla L(\theta)$.",
            r"Where that product grows ($\lambda_1 > 0$), backpropagated gradients grow like"
            r" $e^{\lambda_1 T}$: \alert{gradient explosion is a positive Lyapunov exponent}.",
            r"Practice answers with initialisation, normalisation, clipping and truncation:"
            r" they change the network or the gradient, not the mathematics."),
         "zh": items(
            r"深层网络是许多层雅可比矩阵的乘积；循环网络和学习得到的动力学模型把同一个映射迭代上千次；"
            r"训练本身也是映射 $\theta \mapsto \theta - \alpha\nabla L(\theta)$。",
            r"当这个乘积增长（$\lambda_1 > 0$）时，反向传播的梯度按 $e^{\lambda_1 T}$ 增长："
            r"\alert{梯度爆炸就是正的李雅普诺夫指数}。",
            r"实践中的对策是初始化、归一化、梯度裁剪和截断：它们改变的是网络或梯度，而不是问题本身的数学。")},
        {"en": "Three places where one map is applied many times. The second bullet is the thesis "
               "in one line: an exploding gradient is an exponent, which we can measure.",
         "zh": "同一个映射被反复迭代的三种场合。第二条是整篇论文的一句话概括："
               "梯度爆炸就是一个可以测量的指数。"},
    ),
    Slide(
        {"en": "The question", "zh": "问题"},
        {"en": r"A map $x_{n+1} = f(x_n;\gamma)$ and an objective averaged along its orbit:"
               r"\[ J_T(\gamma) = \frac1T\sum_{n=1}^{T}\Phi(x_n), \qquad"
               r" \langle\Phi\rangle_\gamma = \lim_{T\to\infty} J_T. \]"
               + items(
                   r"Backpropagation computes $dJ_T/d\gamma$ along one orbit exactly; it grows like"
                   r" $e^{\lambda_1 T}$.",
                   r"The derivative of the long-time average, $d\langle\Phi\rangle/d\gamma$, exists"
                   r" (linear response) and is small: $\lim$ and $d/d\gamma$ do not commute.",
                   r"\alert{How do we compute $d\langle\Phi\rangle/d\gamma$ for an unstable network?}"),
         "zh": r"映射 $x_{n+1} = f(x_n;\gamma)$，目标函数沿轨道取平均："
               r"\[ J_T(\gamma) = \frac1T\sum_{n=1}^{T}\Phi(x_n), \qquad"
               r" \langle\Phi\rangle_\gamma = \lim_{T\to\infty} J_T. \]"
               + items(
                   r"反向传播沿一条轨道精确地计算 $dJ_T/d\gamma$；它按 $e^{\lambda_1 T}$ 增长。",
                   r"长时间平均的导数 $d\langle\Phi\rangle/d\gamma$ 存在（线性响应）且很小："
                   r"$\lim$ 与 $d/d\gamma$ 不能交换。",
                   r"\alert{对不稳定网络，如何计算 $d\langle\Phi\rangle/d\gamma$？}")},
        {"en": "Define the objects once: the map, the long-time average, and the two derivatives. "
               "The rest of the talk is about the gap between them.",
         "zh": "先定义对象：映射、长时间平均和两种导数。报告的其余部分讨论二者之间的差距。"},
    ),
    Slide(
        {"en": "Where this work stands", "zh": "相关工作"},
        {"en": items(
            r"Lyapunov spectra by QR: Benettin et al.\ 1980; covariant vectors: Ginelli et al.\ 2007.",
            r"Order and chaos in deep networks (mean field): Poole et al.\ 2016, Schoenholz et al.\ 2017.",
            r"Exploding gradients: Bengio et al.\ 1994, Pascanu et al.\ 2013; remedies: Glorot \& Bengio"
            r" 2010, He et al.\ 2015, Ioffe \& Szegedy 2015.",
            r"Linear response: Ruelle 1997. Shadowing: Wang et al.\ 2014 (LSS), Ni \& Talnikar 2019 (NILSAS),"
            r" Ni 2024.",
            r"Noise: likelihood ratio (Glynn 1990), kernel differentiation and the path-kernel and"
            r" divergence methods (Ni 2025).",
            r"Training dynamics: edge of stability (Cohen et al.\ 2021)."),
         "zh": items(
            r"用 QR 分解计算李雅普诺夫谱：Benettin 等 1980；协变李雅普诺夫向量：Ginelli 等 2007。",
            r"深度网络的有序与混沌（平均场理论）：Poole 等 2016，Schoenholz 等 2017。",
            r"梯度爆炸：Bengio 等 1994，Pascanu 等 2013；补救方法：Glorot \& Bengio 2010，"
            r"He 等 2015，Ioffe \& Szegedy 2015。",
            r"线性响应：Ruelle 1997。阴影方法：Wang 等 2014（LSS），Ni \& Talnikar 2019（NILSAS），Ni 2024。",
            r"噪声：似然比方法（Glynn 1990），核微分以及路径--核与散度方法（Ni 2025）。",
            r"训练动力学：稳定性边缘（Cohen 等 2021）。")},
        {"en": "The thesis connects three literatures: dynamical systems (exponents, shadowing, "
               "linear response), deep-learning practice (initialisation, clipping), and "
               "stochastic sensitivity (likelihood ratios).",
         "zh": "论文连接了三类文献：动力系统（指数、阴影、线性响应）、深度学习实践（初始化、梯度裁剪）"
               "和随机敏感性分析（似然比）。"},
    ),
    Slide(
        {"en": "Lyapunov exponents: rates along an orbit", "zh": "李雅普诺夫指数：沿轨道的增长率"},
        {"en": r"Push $k$ tangent vectors through the layers and re-orthonormalise (QR):"
               r"\[ Df(x_n)\,Q_n = Q_{n+1}R_{n+1}, \qquad"
               r" \lambda_i = \lim_{T\to\infty}\frac1T\sum_{n=1}^{T}\ln|(R_n)_{ii}|. \]"
               + items(
                   r"A rate along a sequence of Jacobians, not a norm bound or a spectral radius.",
                   r"Deep tanh networks of width $N$:"
                   r" $\lambda_1 = \tfrac12\ln\chi_1 - (3\kappa-1)/(4N)$ per layer, measured with"
                   r" error bars over independent orbits."),
         "zh": r"把 $k$ 个切向量逐层推进并重新正交化（QR 分解）："
               r"\[ Df(x_n)\,Q_n = Q_{n+1}R_{n+1}, \qquad"
               r" \lambda_i = \lim_{T\to\infty}\frac1T\sum_{n=1}^{T}\ln|(R_n)_{ii}|. \]"
               + items(
                   r"它是沿一串雅可比矩阵的增长率，而不是范数上界或谱半径。",
                   r"宽度为 $N$ 的深层 tanh 网络：每层"
                   r" $\lambda_1 = \tfrac12\ln\chi_1 - (3\kappa-1)/(4N)$，误差棒取自独立轨道。")},
        {"en": "The algorithm of chapter 1. The draft defined an exponent as a norm bound; the "
               "book shows the difference with a computation (corrections appendix).",
         "zh": "第 1 章的算法。初稿把指数定义为范数上界；书中用计算说明了二者的区别（见更正附录）。"},
        subtitle=chapter(1, "Lyapunov spectrum", "李雅普诺夫谱"),
    ),
    Slide(
        {"en": "Order and chaos in deep tanh networks", "zh": "深层 tanh 网络中的有序与混沌"},
        {"en": r"The edge of chaos ($\lambda_1 = 0$) at width 500, $\sigma_b^2 = 0.05$: measured"
               r" $\sigma_w^2 = {critical}$, mean field {critical_mf}, with the width correction"
               r" {critical_width}.",
         "zh": r"宽度 500、$\sigma_b^2 = 0.05$ 时的混沌边缘（$\lambda_1 = 0$）：测得"
               r" $\sigma_w^2 = {critical}$，平均场理论 {critical_mf}，加入有限宽度修正后 {critical_width}。"},
        {"en": "The measured critical line sits at or just above the mean field; with the "
               "finite-width correction every measured point lies within two of its error bars of "
               "the prediction.",
         "zh": "测得的临界线位于平均场理论之上或与之重合；加入有限宽度修正后，每个测量点与预测之差都在"
               "两个误差棒以内。"},
        subtitle=chapter(1, "Lyapunov spectrum", "李雅普诺夫谱"),
        chart="critical-line",
    ),
    Slide(
        {"en": r"Backpropagation is the adjoint: it grows at $\lambda_1$",
         "zh": r"反向传播就是伴随方程：它以 $\lambda_1$ 增长"},
        {"en": r"$\psi_n = Df(x_n)^{\top}\psi_{n+1}$; the adjoint spectrum equals the forward one."
               r" At $\sigma_w^2 = 4$: backpropagation {backprop_rate} per layer, forward $\lambda_1$"
               r" {forward_rate}.",
         "zh": r"$\psi_n = Df(x_n)^{\top}\psi_{n+1}$；伴随李雅普诺夫谱等于正向谱。"
               r"$\sigma_w^2 = 4$ 时：反向传播每层 {backprop_rate}，正向 $\lambda_1$ 为 {forward_rate}。"},
        {"en": "The measured backpropagation rate and the forward exponent agree at every weight "
               "variance, on both sides of the edge of chaos.",
         "zh": "在混沌边缘两侧的每个权重方差上，测得的反向传播增长率都与正向指数一致。"},
        subtitle=chapter(2, "adjoint spectrum and duality", "伴随谱与对偶性"),
        chart="adjoint-rates",
    ),
    Slide(
        {"en": "Per-orbit derivatives explode; the derivative is small",
         "zh": "单条轨道的导数爆炸，而要求的导数很小"},
        {"en": r"Tied chaotic network: the median $|dJ_T/d\sigma_w|$ grows at {median_rate} per step"
               r" ($\lambda_1 = {lambda_tied}$), while $d\langle J\rangle/d\sigma_w = {truth_160}$"
               r" (finite differences).",
         "zh": r"权重共享的混沌网络：$|dJ_T/d\sigma_w|$ 的中位数每步增长 {median_rate}"
               r"（$\lambda_1 = {lambda_tied}$），而 $d\langle J\rangle/d\sigma_w = {truth_160}$（有限差分）。"},
        {"en": "Every quantile grows at about the exponent, so averaging more orbits does not help: "
               "the spread of the per-orbit derivatives grows as fast as their typical size.",
         "zh": "各分位数都大致以该指数增长，所以增加轨道数目也无济于事：单条轨道导数的离散程度与其典型大小"
               "增长得一样快。"},
        subtitle=chapter(3, "backpropagation under gradient explosion", "梯度爆炸下的反向传播"),
        chart="per-orbit-growth",
    ),
    Slide(
        {"en": "Clipping is biased; truncation needs a truth to tune it",
         "zh": "梯度裁剪有偏；截断需要真值来调参"},
        {"en": r"Bias of $dJ/d\sigma_w$ against finite differences: clipping each adjoint step"
               r" ($c = 0.01$) {bias_clip}; sliding-window truncation {bias_k1} at $K = 1$,"
               r" {bias_k3} at $K = 3$, {bias_k20} at $K = 20$.",
         "zh": r"相对有限差分，$dJ/d\sigma_w$ 的偏差：逐步裁剪伴随（$c = 0.01$）为 {bias_clip}；"
               r"滑动窗口截断在 $K = 1$ 时为 {bias_k1}，$K = 3$ 时为 {bias_k3}，$K = 20$ 时为 {bias_k20}。"},
        {"en": "Truncated backpropagation can be nearly unbiased, but only at a window chosen "
               "against a reference we would not have in practice; the bias changes sign with K.",
         "zh": "截断反向传播可以几乎无偏，但只在对照参考值选出的窗口上；实践中没有这个参考值。"
               "偏差随 K 改变符号。"},
        subtitle=chapter(3, "backpropagation under gradient explosion", "梯度爆炸下的反向传播"),
        chart="truncation-bias",
    ),
    Slide(
        {"en": "The remedies fix the network, not the problem", "zh": "补救方法修复的是网络，而不是问题"},
        {"en": r"One task, 400 SGD steps: an $N(0,1)$ tanh network reaches test accuracy {acc_normal};"
               r" with clipping {acc_clip}; with BatchNorm {acc_bn}; Xavier initialisation {acc_xavier}.",
         "zh": r"同一任务、400 步 SGD：$N(0,1)$ 初始化的 tanh 网络测试准确率 {acc_normal}；"
               r"加梯度裁剪 {acc_clip}；加批归一化 {acc_bn}；Xavier 初始化 {acc_xavier}。"},
        {"en": "What works changes the network so that its gradients no longer explode. Clipping "
               "and L2 leave the network as it is and do not rescue it.",
         "zh": "有效的方法都是改变网络本身，使其梯度不再爆炸。梯度裁剪和 L2 正则化不改变网络，也救不了它。"},
        subtitle=chapter(3, "backpropagation under gradient explosion", "梯度爆炸下的反向传播"),
        chart="remedies",
    ),
    Slide(
        {"en": "Adjoint shadowing (NILSAS)", "zh": "伴随阴影方法（NILSAS）"},
        {"en": r"Find the bounded adjoint solution: among $\psi_n = \psi_n^{\mathrm{inh}} + W_n a_n$"
               r" ($W_n$: $M$ unstable adjoint directions) solve"
               r"\[ \min_{a}\ \sum_n \|\psi_n\|^2 \quad\text{subject to continuity between segments,}\]"
               r"\[ \frac{d\langle\Phi\rangle}{d\gamma} \approx \frac1T\sum_n"
               r" \langle\psi_{n+1}, \partial_\gamma f(x_n)\rangle. \]"
               r"Cost: $M$ extra adjoint solutions and a small least-squares problem."
               r" Lorenz-63: $d\langle z\rangle/d\rho = {lorenz_rho}$ (published: about 1.01).",
         "zh": r"求有界的伴随解：在 $\psi_n = \psi_n^{\mathrm{inh}} + W_n a_n$"
               r"（$W_n$：$M$ 个不稳定伴随方向）中求解"
               r"\[ \min_{a}\ \sum_n \|\psi_n\|^2 \quad\text{约束：各段之间连续，}\]"
               r"\[ \frac{d\langle\Phi\rangle}{d\gamma} \approx \frac1T\sum_n"
               r" \langle\psi_{n+1}, \partial_\gamma f(x_n)\rangle. \]"
               r"代价：$M$ 个额外的伴随解和一个小型最小二乘问题。"
               r"Lorenz-63：$d\langle z\rangle/d\rho = {lorenz_rho}$（文献值约 1.01）。"},
        {"en": "The method of the thesis title. It assumes hyperbolicity: the unstable adjoint "
               "directions must stay separated from the rest.",
         "zh": "论文题目中的方法。它假设双曲性：不稳定伴随方向必须与其余方向保持分离。"},
        subtitle=chapter(4, "backpropagation via adjoint shadowing", "基于伴随阴影的反向传播"),
    ),
    Slide(
        {"en": "On chaotic tanh networks NILSAS does not converge",
         "zh": "在混沌 tanh 网络上 NILSAS 不收敛"},
        {"en": r"Median $\log_{10}|\mathrm{NILSAS}/\mathrm{FD} - 1|$ at width 32: {nilsas_1000} at"
               r" 1000 steps, {nilsas_16000} at 16,000. Truncated adjoints land within {sliding_k3}"
               r" ($K = 3$) and {ensemble_tau10} ($\tau = 10$) of the truth.",
         "zh": r"宽度 32 时 $\log_{10}|\mathrm{NILSAS}/\mathrm{FD} - 1|$ 的中位数：1000 步为 {nilsas_1000}，"
               r"16,000 步为 {nilsas_16000}。截断伴随与真值相差 {sliding_k3}（$K = 3$）和 {ensemble_tau10}"
               r"（$\tau = 10$）。"},
        {"en": "The error grows with the run length instead of shrinking: the networks are not "
               "hyperbolic (exponents near zero). This is the main negative result of chapter 4.",
         "zh": "误差随运行长度增大而不是减小：这些网络不是双曲的（存在接近零的指数）。"
               "这是第 4 章的主要负面结果。"},
        subtitle=chapter(4, "backpropagation via adjoint shadowing", "基于伴随阴影的反向传播"),
        chart="nilsas-error",
    ),
    Slide(
        {"en": "The whole linear response: S + U", "zh": "完整的线性响应：S + U"},
        {"en": r"Ruelle: $d\langle\Phi\rangle/d\gamma = S + U$. Cat map $S + U = {full_cat}$ (exact 0;"
               r" $S$ alone {shadow_cat}); solenoid $\gamma_1$: $S + U = {full_sol1}$, finite"
               r" differences {fd_sol1}, $S$ alone {shadow_sol1}; Lorenz-63 $S + U = {full_lorenz}$.",
         "zh": r"Ruelle：$d\langle\Phi\rangle/d\gamma = S + U$。猫映射 $S + U = {full_cat}$（精确值 0；"
               r"仅 $S$ 为 {shadow_cat}）；螺线管 $\gamma_1$：$S + U = {full_sol1}$，有限差分 {fd_sol1}，"
               r"仅 $S$ 为 {shadow_sol1}；Lorenz-63 $S + U = {full_lorenz}$。"},
        {"en": "The unstable contribution U costs one more adjoint solution and second derivatives. "
               "On the solenoid, shadowing alone has the wrong sign.",
         "zh": "不稳定部分 U 只需多解一个伴随方程并计算二阶导数。在螺线管上，仅用阴影部分连符号都会错。"},
        subtitle=chapter(4, "backpropagation via adjoint shadowing", "基于伴随阴影的反向传播"),
        chart="whole-response",
    ),
    Slide(
        {"en": "Kernel differentiation: noise smooths", "zh": "核微分：噪声带来光滑性"},
        {"en": r"With additive noise $x_{n+1} = f(x_n;\gamma) + \sigma\xi_n$, $\xi_n\sim N(0,I)$:"
               r"\[ \frac{d}{d\gamma}\,\mathbb{E}\,\Phi(x_T) = \mathbb{E}\Big[\Phi(x_T)\sum_{n=0}^{T-1}"
               r"\frac{\langle\xi_n, \partial_\gamma f(x_n)\rangle}{\sigma}\Big]. \]"
               + items(
                   r"No derivative of $\Phi$ or of $f$ in $x$: nothing explodes; the variance grows like"
                   r" $T/\sigma^2$.",
                   r"Path-kernel hybrid: backpropagate $\alpha$ of the way, score the rest; divergence"
                   r" method: carry the score by the inverse Jacobian."),
         "zh": r"加性噪声 $x_{n+1} = f(x_n;\gamma) + \sigma\xi_n$，$\xi_n\sim N(0,I)$："
               r"\[ \frac{d}{d\gamma}\,\mathbb{E}\,\Phi(x_T) = \mathbb{E}\Big[\Phi(x_T)\sum_{n=0}^{T-1}"
               r"\frac{\langle\xi_n, \partial_\gamma f(x_n)\rangle}{\sigma}\Big]. \]"
               + items(
                   r"不需要 $\Phi$ 或 $f$ 对 $x$ 的导数：没有东西会爆炸；方差按 $T/\sigma^2$ 增长。",
                   r"路径--核混合方法：以比例 $\alpha$ 反向传播，其余用得分函数；散度方法：用逆雅可比矩阵传递得分。")},
        {"en": "The likelihood-ratio identity of chapter 5. The draft called kernel smoothing "
               "'kernel differentiation'; the book separates the two.",
         "zh": "第 5 章的似然比恒等式。初稿把核平滑称为“核微分”；书中区分了二者。"},
        subtitle=chapter(5, "kernel differentiation", "核微分"),
    ),
    Slide(
        {"en": "Kernel differentiation where backpropagation explodes",
         "zh": "反向传播爆炸之处，核微分依然有效"},
        {"en": items(
            r"Noisy tied network, $T = 80$: kernel {kernel_80}, finite differences {fd_80};"
            r" the mean of backpropagation is {backprop_80}.",
            r"Hybrid: the variance is smallest at $\alpha = {hybrid_alpha}$.",
            r"For one parameter and equal error bars the kernel needs {kernel_cost} times the paths"
            r" of finite differences ($h = 0.2$; $T = 10$ / 80); it gives every parameter from"
            r" the same paths."),
         "zh": items(
            r"带噪声的权重共享网络，$T = 80$：核微分 {kernel_80}，有限差分 {fd_80}；"
            r"反向传播的均值为 {backprop_80}。",
            r"混合方法：方差在 $\alpha = {hybrid_alpha}$ 处最小。",
            r"对单个参数、相同误差棒，核微分所需路径数是有限差分（$h = 0.2$）的 {kernel_cost} 倍"
            r"（$T = 10$ / 80）；但它用同一批路径给出所有参数的导数。")},
        {"en": "Honest cost: for a single parameter finite differences are cheaper. The kernel "
               "wins when there are many parameters.",
         "zh": "如实说明代价：只有一个参数时有限差分更便宜；参数很多时核微分才占优。"},
        subtitle=chapter(5, "kernel differentiation", "核微分"),
    ),
    Slide(
        {"en": "Divergence method: small noise, small error bar",
         "zh": "散度方法：噪声小，误差棒依然小"},
        {"en": r"Noisy circle map, $\sigma = 0.01$: divergence {circle_div}, kernel {circle_kernel},"
               r" finite differences {circle_fd}. On the tent map (a fold) it returns 0 where the"
               r" derivative is {tent_fd}.",
         "zh": r"带噪声的圆周映射，$\sigma = 0.01$：散度方法 {circle_div}，核微分 {circle_kernel}，"
               r"有限差分 {circle_fd}。在帐篷映射（有折叠）上它给出 0，而导数为 {tent_fd}。"},
        {"en": "The kernel's error bar grows like one over sigma; the divergence method's does not. "
               "It needs an invertible Jacobian: at a fold it is silently wrong, so we show where.",
         "zh": "核微分的误差棒与 σ 成反比地增长，散度方法则不然。它需要可逆的雅可比矩阵：在折叠处它会给出"
               "错误结果，所以我们展示了失效的位置。"},
        subtitle=chapter(5, "kernel differentiation", "核微分"),
        chart="divergence-scan",
    ),
    Slide(
        {"en": "Training is a transient, not a stationary chaotic map",
         "zh": "训练是暂态过程，而不是平稳的混沌映射"},
        {"en": r"784-50-10 network ({parameters} weights), gradient descent: sharpness {sharpness_0} at"
               r" the start; $\alpha = 4$ hovers at the edge of stability (steps {hover}). At"
               r" $\alpha = 0.1$ the smallest Hessian eigenvalue goes from {lmin_0} to {lmin_600};"
               r" a derivative through 600 steps grows only by $e^{{jvp_600}}$.",
         "zh": r"784-50-10 网络（{parameters} 个权重），梯度下降：初始锐度 {sharpness_0}；"
               r"$\alpha = 4$ 时在稳定性边缘徘徊（第 {hover} 步）。$\alpha = 0.1$ 时海森矩阵的最小特征值"
               r"从 {lmin_0} 变为 {lmin_600}；穿过 600 步的导数只增长 $e^{{jvp_600}}$ 倍。"},
        {"en": "The draft's network is not chaotic in training: the negative end of the spectrum "
               "fades (its 10-step finite-time exponent is {negative_end} per step at the start), "
               "and derivatives through training stay moderate.",
         "zh": "初稿中的网络在训练中并不混沌：谱的负端逐渐消失（开始时其 10 步有限时间指数为每步 "
               "{negative_end}），穿过训练过程的导数保持适中。"},
        subtitle=chapter(6, "training as a dynamical system", "训练作为动力系统"),
        chart="training-spectrum",
    ),
    Slide(
        {"en": "Learning Lorenz-63: fine-tuning the climate", "zh": "学习 Lorenz-63：微调长期统计"},
        {"en": r"One-step fit: energy distance {ch7_energy} to held-out data; BPTT's gradient grows"
               r" at {ch7_growth} per time unit. Fine-tuning on the statistics: distance $\times$"
               r" {ch7_kernel} (kernel), {ch7_path} (path-kernel), {ch7_truncated} (truncated),"
               r" {ch7_clipped} (clipped BPTT).",
         "zh": r"逐步拟合：与测试数据的能量距离为 {ch7_energy}；BPTT 梯度每单位时间增长 {ch7_growth}。"
               r"在统计量上微调：距离乘以 {ch7_kernel}（核微分）、{ch7_path}（路径--核）、"
               r"{ch7_truncated}（截断）、{ch7_clipped}（裁剪的 BPTT）。"},
        {"en": "A 995-weight neural map fitted one step at a time forecasts for {ch7_valid} "
               "Lyapunov times, and its climate is off. BPTT explodes at about its exponent "
               "({ch7_lambda}). Kernel differentiation and the hybrid repair the climate, but no "
               "better than truncated BPTT; clipped BPTT does not help at all.",
         "zh": "逐步拟合得到的 995 个权重的神经映射可预报 {ch7_valid} 个李雅普诺夫时间，"
               "长期统计有偏。BPTT 大约以其指数（{ch7_lambda}）爆炸。核微分和混合方法能修复长期统计，"
               "但并不优于截断 BPTT；裁剪的 BPTT 完全无效。"},
        subtitle=chapter(7, "learning a chaotic system", "学习混沌系统"),
        chart="fine-tuning",
    ),
    Slide(
        {"en": "What the book corrects in the draft", "zh": "本书对初稿的更正"},
        {"en": items(
            r"Exponents are not norm bounds: two layers of spectral radius {rho_layer} alternate into"
            r" a network with $\lambda_1 = {lambda_alternating}$ per layer.",
            r"The draft's Stein series diverges where it is needed: trace {stein_trace} after 40"
            r" terms at spectral radius 1.2.",
            r"The training step's Jacobian is $I - \alpha\nabla^2 L$, not $I$: $\max|J - I| = {jac_gap}$.",
            r"The draft's loss ignores the labels: {draft_loss} for both label sets, cross-entropies"
            r" {ce_right} and {ce_wrong}."),
         "zh": items(
            r"指数不是范数上界：两个谱半径为 {rho_layer} 的层交替排列，得到每层"
            r" $\lambda_1 = {lambda_alternating}$ 的网络。",
            r"初稿中的 Stein 级数恰在需要它的地方发散：谱半径 1.2 时前 40 项之和的迹为 {stein_trace}。",
            r"训练步的雅可比矩阵是 $I - \alpha\nabla^2 L$，而不是 $I$：$\max|J - I| = {jac_gap}$。",
            r"初稿的损失函数忽略了标签：两组标签都得到 {draft_loss}，而交叉熵分别为 {ce_right} 和 {ce_wrong}。")},
        {"en": "Each correction is a computation in the book's corrections appendix, not an opinion.",
         "zh": "每一条更正都是书中更正附录里的一个计算，而不是观点。"},
    ),
    Slide(
        {"en": "Limitations", "zh": "局限"},
        {"en": items(
            r"Adjoint shadowing misses the tanh networks' derivative: one orbit's median error is a"
            r" factor $10^{{nilsas_1000}}$ at width 32 and grows with the run length; adding the"
            r" unstable part does not rescue it ($10^{{full_tanh}}$).",
            r"Kernel differentiation needs noise and many paths; for one parameter finite"
            r" differences are cheaper.",
            r"The divergence method fails at folds (0 against {tent_fd} on the tent map).",
            r"On the learning task the new estimators are no better than truncated BPTT.",
            r"Small systems only: widths up to 800, a 995-weight neural map; the full-MNIST run is"
            r" a record, not part of the checked book."),
         "zh": items(
            r"伴随阴影算不对 tanh 网络的导数：宽度 32 时单条轨道误差的中位数为 $10^{{nilsas_1000}}$ 倍，"
            r"且随运行长度增大；加上不稳定部分也无济于事（$10^{{full_tanh}}$）。",
            r"核微分需要噪声和大量路径；只有一个参数时有限差分更便宜。",
            r"散度方法在折叠处失效（帐篷映射上给出 0，而导数为 {tent_fd}）。",
            r"在学习任务上，新的估计方法并不优于截断 BPTT。",
            r"只研究了小系统：宽度至多 800，995 个权重的神经映射；完整 MNIST 的运行只是一次记录，"
            r"不在经过检验的书中。")},
        {"en": "The negative results are measured with error bars; they are results, not failures "
               "of the software.",
         "zh": "这些负面结果都带误差棒测得；它们是结果，而不是软件的失败。"},
    ),
    Slide(
        {"en": "Conclusions", "zh": "结论"},
        {"en": items(
            r"Exploding gradients are Lyapunov exponents: backpropagation grows at {backprop_rate}"
            r" per layer where $\lambda_1 = {forward_rate}$.",
            r"For long-time averages, backpropagation, clipped or truncated, explodes or is biased;"
            r" finite differences measure the derivative ({truth_160}).",
            r"Shadowing plus the unstable part computes it on the hyperbolic test maps and on"
            r" Lorenz-63 ({full_lorenz}), but not on chaotic tanh networks.",
            r"With noise, kernel differentiation computes it ({kernel_80} against {fd_80}); the"
            r" divergence method keeps its error bar as the noise vanishes.",
            r"Training the draft's network is a transient: a derivative through 600 steps grows by"
            r" only $e^{{jvp_600}}$."),
         "zh": items(
            r"梯度爆炸就是李雅普诺夫指数：在 $\lambda_1 = {forward_rate}$ 处，反向传播每层增长 {backprop_rate}。",
            r"对长时间平均，无论是否裁剪或截断，反向传播要么爆炸要么有偏；有限差分测得导数为 {truth_160}。",
            r"阴影部分加不稳定部分能在双曲测试映射和 Lorenz-63 上算出导数（{full_lorenz}），"
            r"但在混沌 tanh 网络上不能。",
            r"有噪声时核微分能算出导数（{kernel_80}，有限差分 {fd_80}）；噪声趋于零时散度方法的误差棒保持不变。",
            r"训练初稿中的网络是暂态过程：穿过 600 步的导数只增长 $e^{{jvp_600}}$ 倍。")},
        {"en": "Five sentences, each with the number that supports it.",
         "zh": "五句话，每句都附有支持它的数字。"},
    ),
    Slide(
        {"en": "Future work", "zh": "未来工作"},
        {"en": items(
            r"Shadowing for non-hyperbolic networks: exponents near zero, where NILSAS's least"
            r" squares lose their footing.",
            r"Kernel and divergence estimators at scale: batched paths on accelerators, variance"
            r" reduction, many parameters at once.",
            r"Derivatives through training (hyperparameter gradients) where training is a transient.",
            r"Learning chaotic systems: combine the unbiased statistics gradient with a cheap"
            r" truncated one."),
         "zh": items(
            r"非双曲网络的阴影方法：在存在接近零的指数时，NILSAS 的最小二乘失去依据。",
            r"大规模的核微分与散度估计：在加速器上批量计算路径，方差缩减，同时处理大量参数。",
            r"在训练是暂态过程时，穿过训练过程求导（超参数梯度）。",
            r"学习混沌系统：把无偏的统计量梯度与廉价的截断梯度结合起来。")},
        {"en": "Directions the measurements point to.",
         "zh": "测量结果所指向的方向。"},
    ),
    Slide(
        {"en": "Thank you! Questions?", "zh": "谢谢！欢迎提问"},
        {"en": r"\begin{center}\Large Backpropagation in unstable neural networks\\[1em]"
               r"\normalsize Every number on these slides is computed and checked in the companion"
               r" book (\texttt{make test}); the backup slides follow.\end{center}",
         "zh": r"\begin{center}\Large 不稳定神经网络中的反向传播算法\\[1em]"
               r"\normalsize 幻灯片上的每个数字都在配套书中计算并经过检验（\texttt{make test}）；"
               r"其后为备用幻灯片。\end{center}"},
        {"en": "Backup slides: reproducibility, NILSAS by width, the glossary.",
         "zh": "备用幻灯片：可复现性、不同宽度下的 NILSAS、术语表。"},
    ),
    Slide(
        {"en": "Backup: how the numbers are checked", "zh": "备用：数字如何检验"},
        {"en": items(
            r"Every chapter is a notebook that calls one library, \texttt{chaosgrad}; nbval re-executes"
            r" it and compares every stored output.",
            r"Twice: with this CPU's kernels and with another CPU's (other vector code, one thread);"
            r" a printed estimate must agree within its error bars, every other character exactly.",
            r"Error bars come from independent orbits or seeds, never from one long correlated run.",
            r"These slides read their numbers from the stored outputs: rerunning a chapter changes"
            r" the deck."),
         "zh": items(
            r"每一章都是调用同一个库 \texttt{chaosgrad} 的 notebook；nbval 重新执行它并比较每个存储的输出。",
            r"执行两遍：用本机 CPU 的内核，以及另一种 CPU 的内核（不同的向量代码，单线程）；"
            r"打印的估计值必须在误差棒内一致，其余字符必须完全相同。",
            r"误差棒来自独立的轨道或随机种子，而不是一次长的相关运行。",
            r"幻灯片上的数字读自存储的输出：重新运行某一章，幻灯片随之改变。")},
        {"en": "For questions about reproducibility.", "zh": "用于回答关于可复现性的问题。"},
        backup=True,
    ),
    Slide(
        {"en": "Backup: NILSAS on tanh networks, by width", "zh": "备用：不同宽度的 tanh 网络上的 NILSAS"},
        {"en": r"Median $\log_{10}|\mathrm{NILSAS}/\mathrm{FD} - 1|$ at 1000 steps: width 16 {nilsas_w16}, 32 {nilsas_w32}, 64 {nilsas_w64}, 128"
               r" {nilsas_w128}. Width 128 has $\lambda_u = {lambda_u128}$ next to"
               r" $\lambda_{u+1} = {lambda_u1_128}$: no gap between unstable and stable exponents.",
         "zh": r"1000 步时 $\log_{10}|\mathrm{NILSAS}/\mathrm{FD} - 1|$ 的中位数："
               r"宽度 16 为 {nilsas_w16}，32 为 {nilsas_w32}，64 为 {nilsas_w64}，128 为 {nilsas_w128}。"
               r"宽度 128 时 $\lambda_u = {lambda_u128}$，紧挨着 $\lambda_{u+1} = {lambda_u1_128}$："
               r"不稳定与稳定指数之间没有间隙。"},
        {"en": "Why shadowing fails here: the exponents around zero are not separated.",
         "zh": "阴影方法在此失效的原因：零附近的指数没有分开。"},
        backup=True,
    ),
    Slide(
        {"en": "Backup: glossary", "zh": "备用：术语表"},
        {"en": r"\begin{tabular}{ll}"
               r"Lyapunov spectrum & 李雅普诺夫谱\\ adjoint Lyapunov spectrum & 伴随李雅普诺夫谱\\"
               r" exploding gradient & 梯度爆炸\\ gradient clipping & 梯度裁剪\\"
               r" truncated backpropagation & 截断反向传播\\ long-time average & 长时间平均\\"
               r" linear response & 线性响应\\ adjoint shadowing & 伴随阴影\\"
               r" kernel differentiation & 核微分\\ edge of stability & 稳定性边缘\\"
               r"\end{tabular}",
         "zh": r"\begin{tabular}{ll}"
               r"李雅普诺夫谱 & Lyapunov spectrum\\ 伴随李雅普诺夫谱 & adjoint Lyapunov spectrum\\"
               r" 梯度爆炸 & exploding gradient\\ 梯度裁剪 & gradient clipping\\"
               r" 截断反向传播 & truncated backpropagation\\ 长时间平均 & long-time average\\"
               r" 线性响应 & linear response\\ 伴随阴影 & adjoint shadowing\\"
               r" 核微分 & kernel differentiation\\ 稳定性边缘 & edge of stability\\"
               r"\end{tabular}"},
        {"en": "Terms as in the book's glossary.", "zh": "术语与书中术语表一致。"},
        backup=True,
    ),
]
